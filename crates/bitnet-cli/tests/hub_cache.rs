//! `-m hf:...`, `bitnet pull`, `list` and `rm` on a Hugging Face cache laid out as Hugging Face's
//! tools lay it out, in offline mode (the HTTP side is tested against a mock hub in bitnet-hub).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const COMMIT: &str = "89abcdef0123456789abcdef0123456789abcdef";

fn bitnet(cache: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_bitnet"))
        .args(args)
        .env("HF_HUB_CACHE", cache)
        .env("HF_HUB_OFFLINE", "1")
        .env_remove("HF_TOKEN")
        .output()
        .expect("running bitnet")
}

fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// A cache holding `tester/bitnet-tiny-gguf` at `main` (the fixture's I2_S file, linked from its
/// snapshot to its blob).
fn cache() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("bitnet-cli-hub-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let repo = dir.join("models--tester--bitnet-tiny-gguf");
    let src = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/tiny-a/gguf/bitnet-b158-i2_s.gguf");
    std::fs::create_dir_all(repo.join("blobs")).unwrap();
    std::fs::create_dir_all(repo.join("snapshots").join(COMMIT)).unwrap();
    std::fs::create_dir_all(repo.join("refs")).unwrap();
    let etag = "5f6e7d8c9b0a5f6e7d8c9b0a5f6e7d8c9b0a5f6e7d8c9b0a5f6e7d8c9b0a5f6e";
    std::fs::copy(&src, repo.join("blobs").join(etag)).unwrap();
    std::os::unix::fs::symlink(
        format!("../../blobs/{etag}"),
        repo.join("snapshots").join(COMMIT).join("ggml-model-i2_s.gguf"),
    )
    .unwrap();
    std::fs::write(repo.join("refs/main"), COMMIT).unwrap();
    dir
}

#[test]
fn hf_references_resolve_from_the_cache() {
    let c = cache();
    let o = bitnet(
        &c,
        &[
            "generate",
            "-m",
            "hf:tester/bitnet-tiny-gguf",
            "-p",
            "Hello",
            "-n",
            "4",
            "--temp",
            "0",
        ],
    );
    let (_, err) = text(&o);
    assert!(o.status.success(), "{err}");
    assert!(err.contains("hf:tester/bitnet-tiny-gguf:"), "{err}");
    let o = bitnet(&c, &["pull", "hf:tester/bitnet-tiny-gguf"]);
    let (out, err) = text(&o);
    assert!(o.status.success(), "{err}");
    assert!(
        out.trim()
            .ends_with(&format!("snapshots/{COMMIT}/ggml-model-i2_s.gguf")),
        "{out}"
    );
    let o = bitnet(&c, &["inspect", &format!("hf:tester/bitnet-tiny-gguf@{COMMIT}")]);
    assert!(o.status.success(), "{}", text(&o).1);
    let (out, _) = text(&bitnet(&c, &["list"]));
    assert!(
        out.contains("hf:tester/bitnet-tiny-gguf") && out.contains("main -> ") && out.contains("ggml-model-i2_s.gguf"),
        "{out}"
    );
    // Not cached, offline: a clear error.
    let o = bitnet(&c, &["pull", "hf:tester/other"]);
    let (_, err) = text(&o);
    assert!(
        !o.status.success() && err.contains("not in the cache") && err.contains("HF_HUB_OFFLINE"),
        "{err}"
    );
    let o = bitnet(&c, &["pull", "model.gguf"]);
    assert!(!o.status.success() && text(&o).1.contains("not a hub reference"));
    let o = bitnet(&c, &["pull", "hf:../x"]);
    assert!(!o.status.success() && text(&o).1.contains("ORG/REPO"));
    // rm frees it; a second rm says it is gone.
    let o = bitnet(&c, &["rm", "hf:tester/bitnet-tiny-gguf"]);
    let (out, err) = text(&o);
    assert!(
        o.status.success() && out.contains("removed hf:tester/bitnet-tiny-gguf"),
        "{out}{err}"
    );
    let (out, _) = text(&bitnet(&c, &["list"]));
    assert!(out.contains("no models"), "{out}");
    assert!(!bitnet(&c, &["rm", "hf:tester/bitnet-tiny-gguf"]).status.success());
    let _ = std::fs::remove_dir_all(&c);
}
