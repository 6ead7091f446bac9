//! The closure to push: command-line paths resolved to store paths, and what
//! `nix path-info --recursive --json` says about every path they reference.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::Value;

use crate::nix::store_path::STORE_DIR;
use crate::nix::{NixHash, StorePath};

use super::PushError;

/// What Nix knows about one store path of the closure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathInfo {
    /// The path.
    pub path: StorePath,
    /// SHA-256 of its NAR.
    pub nar_hash: NixHash,
    /// Size of its NAR.
    pub nar_size: u64,
    /// Paths it references (possibly itself).
    pub references: Vec<StorePath>,
    /// The derivation that built it, when known.
    pub deriver: Option<StorePath>,
    /// Content address in narinfo form (`fixed:r:sha256:…`, `text:sha256:…`).
    pub ca: Option<String>,
    /// Signatures the local store holds for it.
    pub signatures: Vec<String>,
}

/// Resolves a command-line path (`./result`, a store path, a file inside one) to the
/// store path that holds it, following symlinks.
pub fn resolve(arg: &Path) -> Result<StorePath, PushError> {
    let shown = arg.display().to_string();
    let bad = |message: String| PushError::Input {
        path: shown.clone(),
        message,
    };
    let real = std::fs::canonicalize(arg).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => bad("no such file or store path".into()),
        _ => bad(format!("cannot resolve it: {e}")),
    })?;
    store_path_of(&real).ok_or_else(|| {
        if real == Path::new(STORE_DIR) {
            bad(format!(
                "is the store itself; name store paths in {STORE_DIR}, or ./result links"
            ))
        } else {
            bad(format!(
                "resolves to {}, which is not inside {STORE_DIR}; push store paths \
                 (or ./result links to them)",
                real.display()
            ))
        }
    })
}

/// The store path `/nix/store/<hash>-<name>` that an absolute, resolved path lies in.
pub fn store_path_of(path: &Path) -> Option<StorePath> {
    let rest = path.strip_prefix(STORE_DIR).ok()?;
    let first = rest.components().next()?;
    StorePath::from_basename(first.as_os_str().to_str()?).ok()
}

/// Parses `nix path-info --json` output: the array Nix up to 2.18 prints, or the object
/// keyed by path newer Nix prints (with absolute paths or basenames, string or
/// structured hashes). Paths come back sorted and unique.
pub fn parse_path_info(json: &str) -> Result<Vec<PathInfo>, PushError> {
    let bad = |message: String| PushError::Nix {
        step: "parse `nix path-info --json` output".into(),
        message,
    };
    let value: Value = serde_json::from_str(json).map_err(|e| bad(format!("not JSON: {e}")))?;
    // Newer Nix wraps its answer as {"version": N, "info": {...}} in some versions.
    let value = match value {
        Value::Object(mut map) if map.contains_key("info") && map.contains_key("version") => {
            map.remove("info").unwrap_or(Value::Null)
        }
        other => other,
    };
    let entries: Vec<(Option<String>, Value)> = match value {
        Value::Array(items) => items.into_iter().map(|v| (None, v)).collect(),
        Value::Object(map) => map.into_iter().map(|(k, v)| (Some(k), v)).collect(),
        _ => return Err(bad("expected a JSON array or object".into())),
    };
    let mut out = BTreeMap::new();
    for (key, entry) in entries {
        let info = parse_entry(key.as_deref(), &entry).map_err(bad)?;
        out.insert(info.path.clone(), info);
    }
    Ok(out.into_values().collect())
}

fn parse_entry(key: Option<&str>, entry: &Value) -> Result<PathInfo, String> {
    let path_text = match (key, entry.get("path").and_then(Value::as_str)) {
        (Some(k), _) => k.to_string(),
        (None, Some(p)) => p.to_string(),
        (None, None) => return Err("an entry has no \"path\"".into()),
    };
    let path = store_path(&path_text)?;
    if entry.is_null() || entry.get("valid").and_then(Value::as_bool) == Some(false) {
        return Err(format!("{path} is not valid in the local store"));
    }
    let field = |name: &str| entry.get(name).filter(|v| !v.is_null());
    let nar_hash = field("narHash")
        .ok_or_else(|| format!("{path}: no narHash"))
        .and_then(|v| hash(v).map_err(|e| format!("{path}: narHash: {e}")))?;
    let nar_size = field("narSize")
        .and_then(Value::as_u64)
        .ok_or_else(|| format!("{path}: narSize missing or not a number"))?;
    let references = match field("references") {
        None => Vec::new(),
        Some(Value::Array(refs)) => refs
            .iter()
            .map(|r| {
                r.as_str()
                    .ok_or_else(|| format!("{path}: a reference is not a string"))
                    .and_then(store_path)
            })
            .collect::<Result<Vec<_>, _>>()?,
        Some(_) => return Err(format!("{path}: references is not an array")),
    };
    let deriver = match field("deriver").and_then(Value::as_str) {
        None | Some("") | Some("unknown-deriver") => None,
        Some(d) => Some(store_path(d)?),
    };
    let ca = match field("ca") {
        None => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(structured) => {
            Some(structured_ca(structured).map_err(|e| format!("{path}: ca: {e}"))?)
        }
    };
    let signatures = match field("signatures") {
        Some(Value::Array(sigs)) => sigs
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_string)
            .collect(),
        _ => Vec::new(),
    };
    Ok(PathInfo {
        path,
        nar_hash,
        nar_size,
        references,
        deriver,
        ca,
        signatures,
    })
}

/// A store path given absolute or, as newer Nix prints them, as a basename.
fn store_path(text: &str) -> Result<StorePath, String> {
    let parsed = if text.starts_with('/') {
        StorePath::parse(text)
    } else {
        StorePath::from_basename(text)
    };
    parsed.map_err(|e| e.to_string())
}

/// A hash as a string (`sha256-…` SRI, `sha256:…`) or structured
/// (`{"algorithm": "sha256", "format": "base64", "hash": "…"}`).
fn hash(v: &Value) -> Result<NixHash, String> {
    match v {
        Value::String(s) => NixHash::parse(s).map_err(|e| e.to_string()),
        Value::Object(map) => {
            let algo = map
                .get("algorithm")
                .and_then(Value::as_str)
                .unwrap_or("sha256");
            let digest = map
                .get("hash")
                .and_then(Value::as_str)
                .ok_or("structured hash without \"hash\"")?;
            // The digest's length tells its encoding apart (nix-base32, hex, base64).
            NixHash::parse(&format!("{algo}:{digest}")).map_err(|e| e.to_string())
        }
        _ => Err("neither a string nor an object".into()),
    }
}

/// Renders a structured content address (`{"method": "nar", "hash": …}`) in narinfo form.
fn structured_ca(v: &Value) -> Result<String, String> {
    let method = v.get("method").and_then(Value::as_str).ok_or("no method")?;
    let h = hash(v.get("hash").ok_or("no hash")?)?;
    match method {
        "text" => Ok(format!("text:{h}")),
        "nar" => Ok(format!("fixed:r:{h}")),
        "flat" => Ok(format!("fixed:{h}")),
        other => Err(format!("unknown method {other:?}")),
    }
}

/// Runs `nix path-info --recursive --json` on `roots`.
pub async fn query(nix: &Path, roots: &[StorePath]) -> Result<Vec<PathInfo>, PushError> {
    let mut cmd = tokio::process::Command::new(nix);
    cmd.args(["--extra-experimental-features", "nix-command", "path-info"])
        .args(["--recursive", "--json"])
        // Push reads the local store; a path it lacks must fail at once, not after
        // asking every substituter (seconds of retries when one is unreachable).
        .args(["--option", "substitute", "false"])
        .args(roots.iter().map(StorePath::to_absolute))
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    let step = format!("{} path-info --recursive --json", nix.display());
    let out = cmd.output().await.map_err(|e| PushError::Nix {
        step: step.clone(),
        message: match e.kind() {
            std::io::ErrorKind::NotFound => format!(
                "cannot run it: {e}; push reads the closure from the local Nix: is Nix \
                 installed and `{}` on PATH?",
                nix.display()
            ),
            _ => format!("cannot run it: {e}"),
        },
    })?;
    if !out.status.success() {
        return Err(PushError::Nix {
            step,
            message: format!(
                "{}: {}",
                out.status,
                errors_of(&String::from_utf8_lossy(&out.stderr))
            ),
        });
    }
    let infos = parse_path_info(&String::from_utf8_lossy(&out.stdout))?;
    for root in roots {
        if infos.binary_search_by(|i| i.path.cmp(root)).is_err() {
            return Err(PushError::Nix {
                step,
                message: format!("{root} is missing from its output"),
            });
        }
    }
    Ok(infos)
}

/// The part of a Nix tool's stderr that says why it failed: from its first `error:`
/// line on (before it, Nix prints warnings, such as retries of unreachable substituters).
fn errors_of(stderr: &str) -> &str {
    let stderr = stderr.trim();
    let first_error = stderr
        .match_indices("error:")
        .map(|(i, _)| i)
        .find(|&i| i == 0 || stderr[..i].ends_with('\n'));
    first_error.map_or(stderr, |i| &stderr[i..])
}

#[cfg(test)]
mod tests {
    use super::*;

    // Printed by Nix 2.8 on this machine (`nix path-info --recursive --json`).
    const NIX_2_8: &str = r#"[{"path":"/nix/store/h7gp268p5slha3i50466ffpaixchymgl-b-dep.txt","narHash":"sha256-7vrdc5qfoClP9O+jENYlfXTLa2wbCVuVbVLzRABuh+4=","narSize":120,"references":[],"ca":"fixed:r:sha256:1vl7dq049wsjdnamn28vdimwnx3x4pb118zgyi7jk84zk9rxvypf","registrationTime":1795278218},{"path":"/nix/store/psn431w328kgkr2451567sc4plhi89si-a","narHash":"sha256-TombEBh6uqr+5c9K7Z7AFwlwgwjBv6/0ieHcXwe3fpA=","narSize":1472,"references":["/nix/store/h7gp268p5slha3i50466ffpaixchymgl-b-dep.txt","/nix/store/psn431w328kgkr2451567sc4plhi89si-a"],"deriver":"/nix/store/9ka51kwxri4djfxbqxmfq3szya0qscc2-a.drv","registrationTime":1795277768,"ultimate":true,"signatures":["test-1:3luLeDGd3VvF8hrARR3zPyVQbfeHMEM6caN5WMW0Sajl43X93yE/mfKsCcD6Qlwl76pba8vd40nsnju3M3GdAA=="]}]"#;

    #[test]
    fn parses_the_array_nix_2_8_prints() {
        let infos = parse_path_info(NIX_2_8).unwrap();
        assert_eq!(infos.len(), 2);
        let dep = &infos[0];
        assert_eq!(dep.path.name(), "b-dep.txt");
        assert_eq!(dep.nar_size, 120);
        assert_eq!(
            dep.ca.as_deref(),
            Some("fixed:r:sha256:1vl7dq049wsjdnamn28vdimwnx3x4pb118zgyi7jk84zk9rxvypf")
        );
        assert!(dep.deriver.is_none() && dep.references.is_empty());
        let a = &infos[1];
        assert_eq!(
            a.nar_hash,
            NixHash::parse("sha256-TombEBh6uqr+5c9K7Z7AFwlwgwjBv6/0ieHcXwe3fpA=").unwrap()
        );
        assert_eq!(a.references, [dep.path.clone(), a.path.clone()]);
        assert_eq!(a.deriver.as_ref().unwrap().name(), "a.drv");
        assert_eq!(a.signatures.len(), 1);
    }

    #[test]
    fn parses_the_object_newer_nix_prints() {
        let json = r#"{
          "/nix/store/psn431w328kgkr2451567sc4plhi89si-a": {
            "narHash": "sha256-TombEBh6uqr+5c9K7Z7AFwlwgwjBv6/0ieHcXwe3fpA=", "narSize": 1472,
            "references": ["/nix/store/h7gp268p5slha3i50466ffpaixchymgl-b-dep.txt"],
            "deriver": null, "ca": null, "signatures": []},
          "h7gp268p5slha3i50466ffpaixchymgl-b-dep.txt": {
            "narHash": {"algorithm": "sha256", "format": "base64",
                        "hash": "7vrdc5qfoClP9O+jENYlfXTLa2wbCVuVbVLzRABuh+4="},
            "narSize": 120, "references": [],
            "ca": {"method": "nar", "hash": "sha256:1vl7dq049wsjdnamn28vdimwnx3x4pb118zgyi7jk84zk9rxvypf"}}
        }"#;
        let new = parse_path_info(json).unwrap();
        let old = parse_path_info(NIX_2_8).unwrap();
        assert_eq!(
            new[0], old[0],
            "structured hash and CA render like Nix 2.8's strings"
        );
        assert_eq!(new[1].nar_hash, old[1].nar_hash);
        assert!(new[1].deriver.is_none());
        let wrapped = format!(r#"{{"version": 2, "info": {json}}}"#);
        assert_eq!(parse_path_info(&wrapped).unwrap(), new);
    }

    #[test]
    fn rejects_bad_output_with_a_message() {
        for (json, needle) in [
            ("", "not JSON"),
            ("3", "array or object"),
            (r#"[{"narHash":"sha256-x","narSize":1}]"#, "no \"path\""),
            (
                r#"{"/nix/store/psn431w328kgkr2451567sc4plhi89si-a": null}"#,
                "not valid",
            ),
            (
                r#"[{"path":"/nix/store/psn431w328kgkr2451567sc4plhi89si-a","narSize":1}]"#,
                "no narHash",
            ),
            (
                r#"[{"path":"/nix/store/psn431w328kgkr2451567sc4plhi89si-a","narHash":"md5:00","narSize":1}]"#,
                "narHash",
            ),
            (
                r#"[{"path":"/tmp/x","narHash":"sha256-x","narSize":1}]"#,
                "/tmp/x",
            ),
        ] {
            let e = parse_path_info(json).unwrap_err().to_string();
            assert!(e.contains(needle), "{json}: {e}");
        }
    }

    #[test]
    fn finds_the_store_path_holding_a_file() {
        let p = store_path_of(Path::new(
            "/nix/store/psn431w328kgkr2451567sc4plhi89si-a/bin/hello",
        ))
        .unwrap();
        assert_eq!(
            p.to_absolute(),
            "/nix/store/psn431w328kgkr2451567sc4plhi89si-a"
        );
        assert!(store_path_of(Path::new("/nix/store")).is_none());
        assert!(store_path_of(Path::new("/tmp/psn431w328kgkr2451567sc4plhi89si-a")).is_none());
        assert!(store_path_of(Path::new("/nix/store/short-a")).is_none());
    }

    #[test]
    fn nix_failures_are_told_by_their_errors() {
        let stderr =
            "warning: error: unable to download 'https://cache.nixos.org/nix-cache-info': \
                      Couldn't resolve host name (6); retrying in 251 ms\n\
                      don't know how to build these paths:\n  /nix/store/x\n\
                      error: path '/nix/store/x' is not valid\n";
        assert_eq!(errors_of(stderr), "error: path '/nix/store/x' is not valid");
        assert_eq!(errors_of("error: a\n  b\n"), "error: a\n  b");
        assert_eq!(errors_of(" something else \n"), "something else");
    }

    #[test]
    fn resolves_result_symlinks_and_refuses_other_paths() {
        let dir = tempfile::tempdir().unwrap();
        let link = dir.path().join("result");
        // The target need not exist for this check if canonicalize fails; use a real
        // store path when the machine has one, else only check the refusal.
        std::os::unix::fs::symlink(dir.path(), &link).unwrap();
        let e = resolve(&link).unwrap_err().to_string();
        assert!(e.contains("not inside /nix/store"), "{e}");
        let e = resolve(&dir.path().join("missing"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("missing: no such file"), "{e}");
        let e = resolve(Path::new(STORE_DIR)).unwrap_err().to_string();
        assert!(e.contains("is the store itself"), "{e}");
        if let Some(Ok(entry)) = std::fs::read_dir(STORE_DIR).ok().and_then(|mut d| d.next()) {
            let target = entry.path();
            if let Some(expected) = store_path_of(&target) {
                let link2 = dir.path().join("result2");
                std::os::unix::fs::symlink(&target, &link2).unwrap();
                assert_eq!(resolve(&link2).unwrap(), expected);
            }
        }
    }
}
