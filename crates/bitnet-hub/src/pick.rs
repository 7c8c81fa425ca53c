//! Which files of a repository `hf:ORG/REPO` means when no file is named: the I2_S GGUF of a BitNet
//! repository, else its one ternary GGUF, else the Hugging Face model folder when it holds
//! safetensors; anything else is an error listing the choices.

/// What to download.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Choice {
    /// One file (a GGUF).
    File(String),
    /// The files of a Hugging Face model folder (config, weights, tokenizer).
    Folder(Vec<String>),
}

/// Names that mark a ternary GGUF (bitnet.cpp's I2_S, llama.cpp's TQ types).
const TERNARY_MARKS: [&str; 3] = ["i2_s", "tq1_0", "tq2_0"];

/// Top-level files of a Hugging Face folder that the loaders read.
fn folder_file(f: &str) -> bool {
    !f.contains('/')
        && (f.ends_with(".safetensors")
            || matches!(
                f,
                "config.json"
                    | "model.safetensors.index.json"
                    | "tokenizer.json"
                    | "tokenizer_config.json"
                    | "generation_config.json"
                    | "special_tokens_map.json"
                    | "tokenizer.model"
            ))
}

/// A short list of names for messages.
pub(crate) fn summary(files: &[String]) -> String {
    let mut s: Vec<&str> = files.iter().take(20).map(String::as_str).collect();
    if files.len() > 20 {
        s.push("...");
    }
    if s.is_empty() {
        "none".to_string()
    } else {
        s.join(", ")
    }
}

/// The files `repo` means (see the module comment).
pub fn pick_files(repo: &str, files: &[String]) -> anyhow::Result<Choice> {
    let lower = |f: &String| f.to_ascii_lowercase();
    let ggufs: Vec<&String> = files.iter().filter(|f| lower(f).ends_with(".gguf")).collect();
    let with = |marks: &[&str]| -> Vec<&String> {
        ggufs
            .iter()
            .copied()
            .filter(|f| marks.iter().any(|m| lower(f).contains(m)))
            .collect()
    };
    let choices = |v: &[&String]| {
        v.iter()
            .map(|f| format!("hf:{repo}:{f}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    if repo.to_ascii_lowercase().contains("bitnet") {
        let i2s = with(&["i2_s"]);
        if i2s.len() == 1 {
            return Ok(Choice::File(i2s[0].clone()));
        }
    }
    let ternary = with(&TERNARY_MARKS);
    match ternary.len() {
        1 => return Ok(Choice::File(ternary[0].clone())),
        n if n > 1 => anyhow::bail!(
            "hf:{repo} holds {n} ternary GGUF files; name one: {}",
            choices(&ternary)
        ),
        _ => {}
    }
    let has_weights = files.iter().any(|f| !f.contains('/') && f.ends_with(".safetensors"));
    if has_weights && files.iter().any(|f| f == "config.json") {
        return Ok(Choice::Folder(
            files.iter().filter(|f| folder_file(f)).cloned().collect(),
        ));
    }
    match ggufs.len() {
        1 => Ok(Choice::File(ggufs[0].clone())),
        0 => anyhow::bail!(
            "hf:{repo} has no GGUF file and no safetensors model the engine reads (files: {})",
            summary(files)
        ),
        n => anyhow::bail!(
            "hf:{repo} holds {n} GGUF files and none is ternary; name one: {}",
            choices(&ggufs)
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn choices() {
        let official = names(&[
            ".gitattributes",
            "README.md",
            "ggml-model-i2_s.gguf",
            "ggml-model-f16.gguf",
        ]);
        assert_eq!(
            pick_files("microsoft/bitnet-b1.58-2B-4T-gguf", &official).unwrap(),
            Choice::File("ggml-model-i2_s.gguf".into())
        );
        let tq = names(&["m-F16.gguf", "m-TQ2_0.gguf"]);
        assert_eq!(pick_files("x/y", &tq).unwrap(), Choice::File("m-TQ2_0.gguf".into()));
        let two = names(&["m-TQ1_0.gguf", "m-TQ2_0.gguf"]);
        let e = pick_files("x/y", &two).unwrap_err().to_string();
        assert!(
            e.contains("hf:x/y:m-TQ1_0.gguf") && e.contains("hf:x/y:m-TQ2_0.gguf"),
            "{e}"
        );
        let folder = names(&[
            "config.json",
            "model.safetensors",
            "tokenizer.json",
            "README.md",
            "sub/x.safetensors",
        ]);
        assert_eq!(
            pick_files("x/y", &folder).unwrap(),
            Choice::Folder(names(&["config.json", "model.safetensors", "tokenizer.json"]))
        );
        assert!(pick_files("x/y", &names(&["README.md"])).is_err());
        let floats = names(&["a-Q4_K.gguf", "a-F16.gguf"]);
        assert!(pick_files("x/y", &floats).unwrap_err().to_string().contains("name one"));
    }
}
