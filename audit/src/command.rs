//! The auditor's commands, one implementation for `lintas audit verify|verify-archive`
//! and the standalone `lintas-audit` binary: read the files, verify them trusting only
//! the anchor, and say what is proven, what failed and what is not established, in words
//! or as JSON.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use prost::Message;

/// A check of evidence, an archive or a log that found it does not verify (the
/// command's exit status says so apart from other failures).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct NotVerified(pub String);

/// Verifies an archive that `lintas audit archive` wrote in `dir`.
pub fn verify_archive(dir: &Path, anchor: &Path, json: bool) -> Result<()> {
    let anchor = lintas_globalconf::Anchor::load(anchor)
        .with_context(|| format!("reading the anchor {}", anchor.display()))?;
    let manifest: lintas_proto::audit::v1::Archive =
        read_message(&dir.join("manifest.pb"), "an archive manifest")?;
    let report = crate::verify_archive(&manifest, dir, &anchor);
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!(
            "Archive of the log of {} ({}): {}",
            report.origin,
            dir.display(),
            verdict(report.verified)
        );
        print!(
            "{}",
            findings(&report.proven, &report.failures, &report.not_established)
        );
    }
    if !report.verified {
        return Err(NotVerified("the archive does not verify".into()).into());
    }
    Ok(())
}

/// Verifies one bundle file, or the two sides' (then also against each other), or files
/// of many bundles (each on its own).
pub fn verify(bundles: &[PathBuf], anchor: &Path, json: bool) -> Result<()> {
    let anchor = lintas_globalconf::Anchor::load(anchor)
        .with_context(|| format!("reading the anchor {}", anchor.display()))?;
    if bundles.iter().any(|p| crate::files::is_multi_bundle(p)) {
        return verify_each_bundle(bundles, &anchor, json);
    }
    let mut reports = Vec::new();
    for path in bundles {
        let bytes = read_file(path, "an evidence bundle")?;
        reports.push(crate::verify_bytes(&bytes, &anchor));
    }
    let cross = match reports.as_slice() {
        [a, b] => Some(crate::cross_check(a, b)),
        _ => None,
    };
    let ok =
        reports.iter().all(|r| r.verified) && cross.as_ref().is_none_or(|c| c.failures.is_empty());
    if json {
        let out = serde_json::json!({
            "verified": ok,
            "bundles": reports,
            "cross_check": cross,
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        for (path, r) in bundles.iter().zip(&reports) {
            print!("{}", describe(path, r));
        }
        if let Some(c) = &cross {
            println!("Both sides, checked against each other:");
            print!("{}", findings(&c.proven, &c.failures, &c.not_established));
        }
        println!("{}", result_line(ok));
    }
    if !ok {
        return Err(NotVerified("the evidence does not verify".into()).into());
    }
    Ok(())
}

/// A verification report in plain words.
pub fn describe(path: &Path, r: &crate::Report) -> String {
    format!(
        "Evidence from the log of {} ({}): {}\n{}",
        r.origin,
        path.display(),
        verdict(r.verified),
        findings(&r.proven, &r.failures, &r.not_established)
    )
}

fn result_line(ok: bool) -> &'static str {
    if ok {
        "Result: the evidence verifies."
    } else {
        "Result: the evidence does NOT verify."
    }
}

fn verdict(verified: bool) -> &'static str {
    if verified { "verified" } else { "NOT VERIFIED" }
}

/// What is proven, what failed and what is not established, a line each.
fn findings(proven: &[String], failures: &[String], not_established: &[String]) -> String {
    let mut s = String::new();
    for (label, lines) in [
        ("proven", proven),
        ("FAILED", failures),
        ("not established", not_established),
    ] {
        for l in lines {
            s.push_str(&format!("  {label}: {l}\n"));
        }
    }
    s
}

/// Verifies files of many bundles one bundle at a time (memory holds one bundle): each
/// bundle's verdict and failures, and totals. The two sides of such exports are not
/// cross-checked.
fn verify_each_bundle(
    paths: &[PathBuf],
    anchor: &lintas_globalconf::Anchor,
    json: bool,
) -> Result<()> {
    let mut ok = true;
    let mut files = Vec::new();
    for path in paths {
        let (mut exchanges, mut failed) = (0usize, Vec::new());
        let mut origin = String::new();
        let bundles = crate::files::each(path, |n, bundle| {
            let r = crate::verify_bytes(&bundle, anchor);
            exchanges += r.exchanges.len();
            origin.clone_from(&r.origin);
            if !json {
                println!(
                    "{} bundle {n}: {} exchanges, {}",
                    path.display(),
                    r.exchanges.len(),
                    verdict(r.verified)
                );
                for f in &r.failures {
                    println!("  FAILED: {f}");
                }
            }
            if !r.verified {
                failed.extend(r.failures.into_iter().map(|f| format!("bundle {n}: {f}")));
            }
            Ok(())
        })?;
        ok &= failed.is_empty();
        files.push(serde_json::json!({
            "path": path.display().to_string(),
            "origin": origin,
            "bundles": bundles,
            "exchanges": exchanges,
            "verified": failed.is_empty(),
            "failures": failed,
        }));
        if !json {
            println!(
                "Evidence from the log of {origin} ({}): {bundles} bundle(s), {exchanges} exchanges: {}",
                path.display(),
                verdict(failed.is_empty())
            );
        }
    }
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({"verified": ok, "files": files}))?
        );
    } else {
        if paths.len() == 2 {
            println!(
                "Exports of several bundles are verified each on its own, not against each other."
            );
        }
        println!("{}", result_line(ok));
    }
    if !ok {
        return Err(NotVerified("the evidence does not verify".into()).into());
    }
    Ok(())
}

/// Largest bundle or manifest file read.
const MAX_FILE_BYTES: u64 = 1 << 30;

/// Reads a file of at most [`MAX_FILE_BYTES`] that should hold `what`.
fn read_file(path: &Path, what: &str) -> Result<Vec<u8>> {
    let len = std::fs::metadata(path)
        .with_context(|| format!("reading {}", path.display()))?
        .len();
    if len > MAX_FILE_BYTES {
        bail!(
            "{} is {len} bytes; {what} is at most {MAX_FILE_BYTES}",
            path.display()
        );
    }
    std::fs::read(path).with_context(|| format!("reading {}", path.display()))
}

/// Reads a protobuf file of at most [`MAX_FILE_BYTES`], in the one encoding lintas
/// writes.
fn read_message<M: Message + Default>(path: &Path, what: &str) -> Result<M> {
    let bytes = read_file(path, what)?;
    lintas_proto::decode_exact(&bytes)
        .map_err(|e| NotVerified(format!("{} is not {what}: {e}", path.display())).into())
}
