//! Reading documents from a corpus file or directory.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::CaptureError;

/// How a corpus is laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum CorpusFormat {
    /// `.jsonl` → JSONL, `.json` → the Wikipedia summaries object, a directory → text files,
    /// anything else → one text file.
    Auto,
    /// A text file, or a directory of `.txt` files (read in name order).
    Text,
    /// One JSON object per line; the text is in `text_field`.
    Jsonl,
    /// A JSON object whose values hold the text in `text_field` (the default corpus: article
    /// title → `{title, extract, ...}`), read in key order.
    JsonObject,
}

/// What one document of a text file is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum ParagraphSplit {
    /// The whole file.
    File,
    /// Each blank-line-separated paragraph.
    Paragraph,
}

/// A document with its id: its index in corpus order, before any shuffling.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Document {
    pub id: u32,
    pub text: String,
}

/// Every non-empty document of the corpus, in corpus order.
pub fn read_corpus(
    path: &Path,
    format: CorpusFormat,
    text_field: &str,
    split: ParagraphSplit,
) -> Result<Vec<Document>, CaptureError> {
    let format = match format {
        CorpusFormat::Auto if path.is_dir() => CorpusFormat::Text,
        CorpusFormat::Auto => match path.extension().and_then(|e| e.to_str()) {
            Some("jsonl") => CorpusFormat::Jsonl,
            Some("json") => CorpusFormat::JsonObject,
            _ => CorpusFormat::Text,
        },
        other => other,
    };
    let texts = match format {
        CorpusFormat::Text | CorpusFormat::Auto => text_documents(path, split)?,
        CorpusFormat::Jsonl => jsonl_documents(path, text_field)?,
        CorpusFormat::JsonObject => json_object_documents(path, text_field)?,
    };
    let documents: Vec<Document> = texts
        .into_iter()
        .filter(|t| !t.trim().is_empty())
        .enumerate()
        .map(|(i, text)| Document { id: i as u32, text })
        .collect();
    if documents.is_empty() {
        return Err(CaptureError::Corpus {
            path: path.to_path_buf(),
            message: "contains no documents".into(),
        });
    }
    Ok(documents)
}

fn read_text(path: &Path) -> Result<String, CaptureError> {
    let bytes = std::fs::read(path).map_err(|e| CaptureError::Corpus {
        path: path.into(),
        message: e.to_string(),
    })?;
    String::from_utf8(bytes).map_err(|e| CaptureError::Corpus {
        path: path.into(),
        message: format!(
            "not UTF-8 text (invalid byte at offset {})",
            e.utf8_error().valid_up_to()
        ),
    })
}

fn text_documents(path: &Path, split: ParagraphSplit) -> Result<Vec<String>, CaptureError> {
    let files: Vec<PathBuf> = if path.is_dir() {
        let mut files: Vec<PathBuf> = std::fs::read_dir(path)
            .map_err(|e| CaptureError::Corpus {
                path: path.into(),
                message: e.to_string(),
            })?
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.is_file() && p.extension().is_some_and(|e| e == "txt"))
            .collect();
        files.sort();
        if files.is_empty() {
            return Err(CaptureError::Corpus {
                path: path.into(),
                message: "has no .txt files".into(),
            });
        }
        files
    } else {
        vec![path.to_path_buf()]
    };
    let mut documents = Vec::new();
    for file in files {
        let text = read_text(&file)?.replace("\r\n", "\n");
        match split {
            ParagraphSplit::File => documents.push(text),
            ParagraphSplit::Paragraph => {
                documents.extend(text.split("\n\n").map(|p| p.trim().to_string()));
            }
        }
    }
    Ok(documents)
}

fn field(
    value: &serde_json::Value,
    field: &str,
    path: &Path,
    at: &str,
) -> Result<String, CaptureError> {
    match value.get(field) {
        Some(serde_json::Value::String(s)) => Ok(s.clone()),
        Some(other) => Err(CaptureError::Corpus {
            path: path.into(),
            message: format!("{at}: field `{field}` is {other}, expected a string"),
        }),
        None => Err(CaptureError::Corpus {
            path: path.into(),
            message: format!("{at}: no field `{field}`"),
        }),
    }
}

fn jsonl_documents(path: &Path, text_field: &str) -> Result<Vec<String>, CaptureError> {
    let text = read_text(path)?;
    let mut documents = Vec::new();
    for (i, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let at = format!("line {}", i + 1);
        let value: serde_json::Value =
            serde_json::from_str(line).map_err(|e| CaptureError::Corpus {
                path: path.into(),
                message: format!("{at}: {e}"),
            })?;
        documents.push(field(&value, text_field, path, &at)?);
    }
    Ok(documents)
}

fn json_object_documents(path: &Path, text_field: &str) -> Result<Vec<String>, CaptureError> {
    let value: serde_json::Value =
        serde_json::from_str(&read_text(path)?).map_err(|e| CaptureError::Corpus {
            path: path.into(),
            message: e.to_string(),
        })?;
    let object = value.as_object().ok_or_else(|| CaptureError::Corpus {
        path: path.into(),
        message: "expected a JSON object of documents".into(),
    })?;
    object
        .iter()
        .map(|(key, doc)| field(doc, text_field, path, &format!("entry `{key}`")))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_format_reads_its_documents_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let txt = dir.path().join("a.txt");
        std::fs::write(&txt, "One.\n\nTwo.\r\n\r\n\n\nThree.").unwrap();
        let docs =
            read_corpus(&txt, CorpusFormat::Auto, "text", ParagraphSplit::Paragraph).unwrap();
        let texts: Vec<&str> = docs.iter().map(|d| d.text.as_str()).collect();
        assert_eq!(texts, ["One.", "Two.", "Three."]);
        assert_eq!(docs.iter().map(|d| d.id).collect::<Vec<_>>(), [0, 1, 2]);
        let whole = read_corpus(&txt, CorpusFormat::Text, "text", ParagraphSplit::File).unwrap();
        assert_eq!(whole.len(), 1);

        let jsonl = dir.path().join("c.jsonl");
        std::fs::write(&jsonl, "{\"body\": \"x\"}\n\n{\"body\": \"y\"}\n").unwrap();
        let docs = read_corpus(&jsonl, CorpusFormat::Auto, "body", ParagraphSplit::File).unwrap();
        assert_eq!(
            docs.iter().map(|d| d.text.as_str()).collect::<Vec<_>>(),
            ["x", "y"]
        );

        let json = dir.path().join("w.json");
        std::fs::write(
            &json,
            r#"{"B": {"extract": "bee"}, "A": {"extract": "ay"}}"#,
        )
        .unwrap();
        let docs = read_corpus(&json, CorpusFormat::Auto, "extract", ParagraphSplit::File).unwrap();
        assert_eq!(
            docs.iter().map(|d| d.text.as_str()).collect::<Vec<_>>(),
            ["ay", "bee"]
        );

        std::fs::write(dir.path().join("b.txt"), "Second file.").unwrap();
        let docs =
            read_corpus(dir.path(), CorpusFormat::Auto, "text", ParagraphSplit::File).unwrap();
        assert_eq!(docs.len(), 2);
    }

    #[test]
    fn bad_corpora_name_the_file_and_the_problem() {
        let dir = tempfile::tempdir().unwrap();
        let jsonl = dir.path().join("c.jsonl");
        std::fs::write(&jsonl, "{\"body\": \"x\"}\n{\"text\": 3}\n").unwrap();
        let err = read_corpus(&jsonl, CorpusFormat::Auto, "body", ParagraphSplit::File)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("c.jsonl") && err.contains("line 2: no field `body`"),
            "{err}"
        );
        let empty = dir.path().join("e.txt");
        std::fs::write(&empty, "\n\n").unwrap();
        let err = read_corpus(&empty, CorpusFormat::Auto, "text", ParagraphSplit::File)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("e.txt") && err.contains("no documents"),
            "{err}"
        );
    }
}
