//! Print a GGUF file's metadata (arrays summarised) and tensor directory.
//!
//! `cargo run -p monoscope-formats --example gguf_info -- FILE.gguf`

use monoscope_formats::{GgufFile, MetadataValue};

fn main() {
    let Some(path) = std::env::args().nth(1) else {
        eprintln!("usage: gguf_info FILE.gguf");
        std::process::exit(2);
    };
    let g = match GgufFile::open(path.as_ref()) {
        Ok(g) => g,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(1);
        }
    };
    println!("GGUF v{}, data at byte {}", g.version(), g.data_offset());
    for (k, v) in g.metadata() {
        match v {
            MetadataValue::Array(a) => {
                let head: Vec<_> = a.iter().take(5).collect();
                println!("{k} = [{} items] {head:?}...", a.len());
            }
            MetadataValue::String(s) if s.len() > 200 => println!("{k} = {:?}...", &s[..200]),
            v => println!("{k} = {v:?}"),
        }
    }
    for t in g.tensors() {
        println!("{:40} {:6} {:?}", t.name, t.ggml_type.name(), t.shape());
    }
}
