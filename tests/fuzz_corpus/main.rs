//! Replays every fuzzing input kept in the repository through its target, so `cargo test`
//! exercises each fuzz target on stable Rust without `cargo fuzz`.
//!
//! Inputs live in `fuzz/corpus/<target>/` (seeds the fuzzer starts from) and
//! `fuzz/regressions/<target>/` (inputs that once crashed a target, kept after the fix). The
//! target bodies are `annals::testing::fuzz::<target>`; a panic there names the input file.
//!
//! The seeds are made by `write_seed_corpus` below (ignored: it writes into the source tree):
//! `cargo test --test fuzz_corpus -- --ignored write_seed_corpus`.

use std::fs;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};

use annals::testing::fuzz::{TARGETS, seeds};

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz")
}

/// The files of `dir`, sorted; none when it does not exist.
fn inputs(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file())
        .filter(|p| {
            !p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with('.'))
        })
        .collect();
    files.sort();
    files
}

/// Runs every kept input of every target; reports all failing inputs, not just the first.
fn replay(kind: &str) -> usize {
    let mut ran = 0;
    let mut failures = Vec::new();
    for (target, body) in TARGETS {
        for path in inputs(&fuzz_dir().join(kind).join(target)) {
            let data = fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            ran += 1;
            if catch_unwind(AssertUnwindSafe(|| body(&data))).is_err() {
                failures.push(path.display().to_string());
            }
        }
    }
    assert!(failures.is_empty(), "fuzz inputs that fail: {failures:#?}");
    ran
}

#[test]
fn every_seed_input_passes_its_fuzz_target() {
    let ran = replay("corpus");
    assert!(
        ran >= TARGETS.len(),
        "the seed corpus is missing ({ran} inputs)"
    );
    for (target, _) in TARGETS {
        assert!(
            !inputs(&fuzz_dir().join("corpus").join(target)).is_empty(),
            "no seed input for the fuzz target {target}"
        );
    }
}

#[test]
fn every_input_that_once_crashed_a_fuzz_target_now_passes() {
    replay("regressions");
}

#[test]
fn fresh_seeds_pass_their_fuzz_targets() {
    for (target, body) in TARGETS {
        let seeds = seeds(target);
        assert!(!seeds.is_empty(), "no seeds for {target}");
        for seed in seeds {
            body(&seed);
        }
    }
}

#[test]
#[ignore = "writes the seed corpus into the source tree"]
fn write_seed_corpus() {
    for (target, _) in TARGETS {
        let dir = fuzz_dir().join("corpus").join(target);
        fs::create_dir_all(&dir).expect("create the corpus directory");
        for (i, seed) in seeds(target).into_iter().enumerate() {
            fs::write(dir.join(format!("seed-{i:02}")), seed).expect("write a seed");
        }
    }
}
