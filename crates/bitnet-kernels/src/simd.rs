//! Run-time choice of the SIMD level: detected once, capped by `BITNET_SIMD` and by
//! [`set_simd_level`]. Kernels never run an instruction set the CPU lacks: every dispatch goes
//! through [`SimdLevel::clamp_to_cpu`].

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::OnceLock;

/// Instruction-set levels with their own kernels. x86 levels are ordered
/// `Scalar < Avx2 < Avx512 < Avx512Vnni < Avx512Vbmi` (each includes the ones before it); `Neon` is
/// the aarch64 level. Kernels ask what a level includes ([`SimdLevel::has_avx2`] and its siblings)
/// rather than matching variants, so a new level cannot silently fall back to scalar.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SimdLevel {
    /// Portable Rust, the reference every other level must match.
    Scalar,
    /// AVX2 + FMA + F16C (Haswell, Zen 1 and later).
    Avx2,
    /// AVX-512 F + BW + VL (Skylake-X and later, Zen 4).
    Avx512,
    /// AVX-512 plus VNNI (`vpdpbusd`; Cascade Lake, Ice Lake, Zen 4 and later).
    Avx512Vnni,
    /// AVX-512 VNNI plus VBMI (`vpermb`, `vpmultishiftqb`; Ice Lake, Zen 4 and later): what the
    /// Triple5 layout's kernels need.
    Avx512Vbmi,
    /// aarch64 Advanced SIMD (kernels fall back to scalar for now).
    Neon,
}

impl SimdLevel {
    /// The lower-case name `BITNET_SIMD` accepts.
    pub fn name(self) -> &'static str {
        match self {
            SimdLevel::Scalar => "scalar",
            SimdLevel::Avx2 => "avx2",
            SimdLevel::Avx512 => "avx512",
            SimdLevel::Avx512Vnni => "avx512vnni",
            SimdLevel::Avx512Vbmi => "avx512vbmi",
            SimdLevel::Neon => "neon",
        }
    }

    /// Every level, lowest first within each architecture.
    pub const ALL: [SimdLevel; 6] = [
        SimdLevel::Scalar,
        SimdLevel::Avx2,
        SimdLevel::Avx512,
        SimdLevel::Avx512Vnni,
        SimdLevel::Avx512Vbmi,
        SimdLevel::Neon,
    ];

    /// Whether this level includes `other`'s instructions (`other.min(self) == other`).
    pub fn includes(self, other: SimdLevel) -> bool {
        self.min(other) == other
    }

    /// AVX2 + FMA + F16C.
    pub fn has_avx2(self) -> bool {
        self.includes(SimdLevel::Avx2)
    }

    /// AVX-512 F/BW/VL (and everything [`has_avx2`](Self::has_avx2) implies).
    pub fn has_avx512(self) -> bool {
        self.includes(SimdLevel::Avx512)
    }

    /// AVX-512 VNNI on top of [`has_avx512`](Self::has_avx512).
    pub fn has_avx512_vnni(self) -> bool {
        self.includes(SimdLevel::Avx512Vnni)
    }

    /// AVX-512 VBMI on top of [`has_avx512_vnni`](Self::has_avx512_vnni).
    pub fn has_avx512_vbmi(self) -> bool {
        self.includes(SimdLevel::Avx512Vbmi)
    }

    /// Parses a `BITNET_SIMD` value (case-insensitive).
    pub fn parse(s: &str) -> Option<SimdLevel> {
        Self::ALL.into_iter().find(|l| l.name().eq_ignore_ascii_case(s.trim()))
    }

    fn x86_rank(self) -> Option<u8> {
        match self {
            SimdLevel::Scalar => Some(0),
            SimdLevel::Avx2 => Some(1),
            SimdLevel::Avx512 => Some(2),
            SimdLevel::Avx512Vnni => Some(3),
            SimdLevel::Avx512Vbmi => Some(4),
            SimdLevel::Neon => None,
        }
    }

    /// The lower of two levels. Levels of different architectures meet at `Scalar`.
    pub fn min(self, other: SimdLevel) -> SimdLevel {
        if self == other {
            return self;
        }
        match (self.x86_rank(), other.x86_rank()) {
            (Some(a), Some(b)) => {
                if a <= b {
                    self
                } else {
                    other
                }
            }
            _ => SimdLevel::Scalar,
        }
    }

    /// This level, lowered to what the running CPU supports. Dispatchers call this, so an explicit
    /// level from a caller can never select an unsupported instruction set.
    pub fn clamp_to_cpu(self) -> SimdLevel {
        self.min(detected_simd_level())
    }

    /// Position in [`ALL`](Self::ALL): what kernel tables are indexed by.
    pub fn index(self) -> usize {
        match self {
            SimdLevel::Scalar => 0,
            SimdLevel::Avx2 => 1,
            SimdLevel::Avx512 => 2,
            SimdLevel::Avx512Vnni => 3,
            SimdLevel::Avx512Vbmi => 4,
            SimdLevel::Neon => 5,
        }
    }

    fn to_u8(self) -> u8 {
        self.index() as u8
    }

    fn from_u8(v: u8) -> SimdLevel {
        Self::ALL.get(v as usize).copied().unwrap_or(SimdLevel::Scalar)
    }
}

/// The best level this CPU supports (ignores every cap). Detected once.
pub fn detected_simd_level() -> SimdLevel {
    static DETECTED: OnceLock<SimdLevel> = OnceLock::new();
    *DETECTED.get_or_init(detect)
}

#[cfg(target_arch = "x86_64")]
fn detect() -> SimdLevel {
    use std::arch::is_x86_feature_detected as has;
    if !(has!("avx2") && has!("fma") && has!("f16c")) {
        return SimdLevel::Scalar;
    }
    if !(has!("avx512f") && has!("avx512bw") && has!("avx512vl")) {
        return SimdLevel::Avx2;
    }
    if !has!("avx512vnni") {
        return SimdLevel::Avx512;
    }
    if !has!("avx512vbmi") {
        return SimdLevel::Avx512Vnni;
    }
    SimdLevel::Avx512Vbmi
}

#[cfg(target_arch = "aarch64")]
fn detect() -> SimdLevel {
    if std::arch::is_aarch64_feature_detected!("neon") {
        SimdLevel::Neon
    } else {
        SimdLevel::Scalar
    }
}

#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
fn detect() -> SimdLevel {
    SimdLevel::Scalar
}

fn env_cap() -> Option<SimdLevel> {
    static ENV: OnceLock<Option<SimdLevel>> = OnceLock::new();
    *ENV.get_or_init(|| std::env::var("BITNET_SIMD").ok().and_then(|v| SimdLevel::parse(&v)))
}

const UNSET: u8 = u8::MAX;
/// Cap from [`set_simd_level`] (`UNSET` = none).
static PROGRAM_CAP: AtomicU8 = AtomicU8::new(UNSET);
/// Cached result of [`simd_level`] (`UNSET` = not computed yet).
static EFFECTIVE: AtomicU8 = AtomicU8::new(UNSET);

fn compute_effective() -> SimdLevel {
    let mut level = detected_simd_level();
    if let Some(cap) = env_cap() {
        level = level.min(cap);
    }
    let prog = PROGRAM_CAP.load(Ordering::Relaxed);
    if prog != UNSET {
        level = level.min(SimdLevel::from_u8(prog));
    }
    level
}

/// The level the kernels use: detected level capped by `BITNET_SIMD` and [`set_simd_level`].
pub fn simd_level() -> SimdLevel {
    let v = EFFECTIVE.load(Ordering::Relaxed);
    if v != UNSET {
        return SimdLevel::from_u8(v);
    }
    let level = compute_effective();
    EFFECTIVE.store(level.to_u8(), Ordering::Relaxed);
    level
}

/// Caps the level used by [`simd_level`] (replacing an earlier cap; the `BITNET_SIMD` cap still
/// applies). Passing the detected level or higher removes the programmatic cap in effect.
pub fn set_simd_level(level: SimdLevel) {
    PROGRAM_CAP.store(level.to_u8(), Ordering::Relaxed);
    EFFECTIVE.store(compute_effective().to_u8(), Ordering::Relaxed);
}

/// Every level this CPU can run, lowest first (what tests iterate over).
pub fn supported_simd_levels() -> Vec<SimdLevel> {
    let det = detected_simd_level();
    SimdLevel::ALL
        .into_iter()
        .filter(|&l| l == SimdLevel::Scalar || l.min(det) == l)
        .collect()
}

/// Hints the CPU to bring `bytes` into cache (no effect on results; a no-op off x86-64).
#[inline]
pub(crate) fn prefetch(bytes: &[u8]) {
    #[cfg(target_arch = "x86_64")]
    for line in bytes.chunks(64) {
        // SAFETY: a prefetch never faults and has no architectural effect; the address is inside a
        // live slice anyway.
        unsafe { core::arch::x86_64::_mm_prefetch::<{ core::arch::x86_64::_MM_HINT_T0 }>(line.as_ptr().cast()) };
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = bytes;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn min_and_parse() {
        assert_eq!(SimdLevel::Avx2.min(SimdLevel::Avx512Vnni), SimdLevel::Avx2);
        assert_eq!(SimdLevel::Avx512Vnni.min(SimdLevel::Avx512), SimdLevel::Avx512);
        assert_eq!(SimdLevel::Neon.min(SimdLevel::Avx2), SimdLevel::Scalar);
        assert_eq!(SimdLevel::Neon.min(SimdLevel::Neon), SimdLevel::Neon);
        assert_eq!(SimdLevel::parse("AVX512vnni"), Some(SimdLevel::Avx512Vnni));
        assert_eq!(SimdLevel::parse(" scalar "), Some(SimdLevel::Scalar));
        assert_eq!(SimdLevel::parse("sse"), None);
        assert!(SimdLevel::Avx512Vbmi.has_avx512_vnni() && SimdLevel::Avx512Vbmi.has_avx2());
        assert!(!SimdLevel::Avx512Vnni.has_avx512_vbmi() && !SimdLevel::Neon.has_avx2());
        for (i, l) in SimdLevel::ALL.into_iter().enumerate() {
            assert_eq!(l.index(), i);
            assert_eq!(SimdLevel::from_u8(l.to_u8()), l);
            assert_eq!(SimdLevel::parse(l.name()), Some(l));
        }
        let levels = supported_simd_levels();
        assert_eq!(levels[0], SimdLevel::Scalar);
        assert!(levels.contains(&detected_simd_level()));
        for l in levels {
            assert_eq!(l.clamp_to_cpu(), l);
        }
    }
}
