//! Stop strings: generation ends when the text contains one of them, and neither the stop string nor
//! anything after it is shown. Text that could be the start of a stop string is held back until the
//! next token tells whether it is one, so a streaming client never sees half of a stop string.

/// Scans streamed text for stop strings.
#[derive(Clone, Debug, Default)]
pub struct StopMatcher {
    stops: Vec<String>,
    /// Text received but not yet released (a suffix that is a prefix of some stop string).
    held: String,
}

impl StopMatcher {
    /// Empty stop strings are ignored.
    pub fn new(stops: &[String]) -> Self {
        StopMatcher {
            stops: stops.iter().filter(|s| !s.is_empty()).cloned().collect(),
            held: String::new(),
        }
    }

    /// Adds `text`; returns the text that can be shown now and whether a stop string was found (then the
    /// returned text is everything before it, and the matcher should not be fed again).
    pub fn push(&mut self, text: &str) -> (String, bool) {
        if self.stops.is_empty() {
            return (text.to_string(), false);
        }
        self.held.push_str(text);
        // The earliest stop string occurrence wins.
        if let Some(at) = self.stops.iter().filter_map(|s| self.held.find(s.as_str())).min() {
            let out = self.held[..at].to_string();
            self.held.clear();
            return (out, true);
        }
        // Hold back the longest suffix that is a proper prefix of a stop string.
        let keep_from = self
            .held
            .char_indices()
            .map(|(i, _)| i)
            .find(|&i| {
                let suffix = &self.held[i..];
                self.stops.iter().any(|s| s.starts_with(suffix))
            })
            .unwrap_or(self.held.len());
        let out = self.held[..keep_from].to_string();
        self.held.replace_range(..keep_from, "");
        (out, false)
    }

    /// Releases the held-back text (generation ended for another reason).
    pub fn flush(&mut self) -> String {
        std::mem::take(&mut self.held)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(stops: &[&str], pieces: &[&str]) -> (String, bool) {
        let stops: Vec<String> = stops.iter().map(|s| s.to_string()).collect();
        let mut m = StopMatcher::new(&stops);
        let mut out = String::new();
        for p in pieces {
            let (t, hit) = m.push(p);
            out += &t;
            if hit {
                return (out, true);
            }
        }
        out += &m.flush();
        (out, false)
    }

    #[test]
    fn stop_split_over_pieces_is_never_shown() {
        assert_eq!(
            run(&["\nUser:"], &["Hi", " there\n", "Us", "er: more"]),
            ("Hi there".into(), true)
        );
    }

    #[test]
    fn near_miss_is_released() {
        assert_eq!(run(&["STOP"], &["a ST", "OCK b"]), ("a STOCK b".into(), false));
        assert_eq!(run(&["STOP"], &["a ST"]), ("a ST".into(), false));
    }

    #[test]
    fn earliest_of_several_stops_wins_and_unicode_is_safe() {
        assert_eq!(run(&["日本", "x"], &["ab日", "本cx"]), ("ab".into(), true));
        assert_eq!(run(&["b", "abc"], &["xab"]), ("xa".into(), true));
        assert_eq!(run(&[], &["free ", "text"]), ("free text".into(), false));
    }

    #[test]
    fn holds_only_what_could_start_a_stop() {
        let mut m = StopMatcher::new(&["</s>".to_string()]);
        assert_eq!(m.push("hello <"), ("hello ".to_string(), false));
        assert_eq!(m.push("b>"), ("<b>".to_string(), false));
    }
}
