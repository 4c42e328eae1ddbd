//! Writes the synthetic demo run and its site: `cargo run -p monoscope-browser --example demo_site -- DIR`.

fn main() {
    let dir = std::path::PathBuf::from(std::env::args().nth(1).expect("usage: demo_site DIR"));
    let files =
        monoscope_browser::testing::write_demo_run(&dir, 300).expect("writing the demo run");
    let site = dir.join("site");
    monoscope_browser::write_site(&files, &Default::default(), &site).expect("writing the site");
    println!("{}", site.display());
}
