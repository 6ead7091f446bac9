//! The real Nix client: an isolated configuration, closures built from plain derivations.
//!
//! Builds happen in the machine's `/nix/store` (a diverted store cannot build without a
//! sandbox), so each test salts its derivations with a unique string: no two tests ever
//! share a store path. Substitution targets are fresh chroot stores in temporary folders.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use crate::process::{run, temp_dir, unique_name};
use crate::tools::binary;

const HINT: &str = "install Debian's `nix-bin` package (e2e/tools/install-all.sh does)";

/// One store path to build: its size in random (incompressible) bytes, optional text, and
/// what it references.
#[derive(Debug, Clone)]
pub struct PathSpec {
    /// Derivation name (the part after the hash).
    pub name: String,
    /// Bytes of random content in `$out/blob`.
    pub size: u64,
    /// Bytes of text in `$out/share/` (half a decimal dump, half base64 of random bytes:
    /// compressible about as well as typical binaries and docs), beside the blob.
    pub text: u64,
    /// Indices of earlier paths in the same closure that this one references.
    pub refs: Vec<usize>,
}

impl PathSpec {
    /// A path named `name` with `size` bytes referencing the earlier paths `refs`.
    pub fn new(name: &str, size: u64, refs: &[usize]) -> PathSpec {
        PathSpec {
            name: name.to_string(),
            size,
            text: 0,
            refs: refs.to_vec(),
        }
    }

    /// The same path with `text` bytes of text besides its random blob.
    pub fn with_text(mut self, text: u64) -> PathSpec {
        self.text = text;
        self
    }
}

/// The Nix client with a configuration of its own (no daemon, no sandbox, no substituters).
#[derive(Debug)]
pub struct Nix {
    conf_dir: PathBuf,
    work: PathBuf,
}

impl Nix {
    /// The client shared by every test in this binary.
    pub fn shared() -> &'static Nix {
        static NIX: OnceLock<Nix> = OnceLock::new();
        NIX.get_or_init(|| {
            binary("LARDER_NIX", Some("nix"), HINT);
            let work = temp_dir("nix");
            let conf_dir = work.join("conf");
            std::fs::create_dir_all(&conf_dir).expect("create nix conf dir");
            std::fs::write(
                conf_dir.join("nix.conf"),
                "sandbox = false\nbuild-users-group =\nexperimental-features = nix-command\n\
                 substituters =\nrequire-sigs = true\nwarn-dirty = false\n",
            )
            .expect("write nix.conf");
            Nix { conf_dir, work }
        })
    }

    /// A command for a Nix program (`nix`, `nix-build`, `nix-store`) under this configuration.
    pub fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new(program);
        cmd.env("NIX_CONF_DIR", &self.conf_dir)
            .env("NIX_REMOTE", "local")
            .env_remove("NIX_PATH")
            .env_remove("NIX_USER_CONF_FILES");
        cmd
    }

    /// Builds the closure `specs` (each may reference earlier ones), salted for `test`.
    ///
    /// Returns the store paths in the order of `specs`.
    pub fn build_closure(&self, test: &str, specs: &[PathSpec]) -> Vec<String> {
        self.build_closure_salted(&unique_name(test), specs)
    }

    /// Builds `specs` with a salt of the caller's choosing: the same salt and specs give
    /// the same store paths, so a benchmark rerun reuses what it built before.
    pub fn build_closure_salted(&self, salt: &str, specs: &[PathSpec]) -> Vec<String> {
        let file = self.work.join(format!("{salt}.nix"));
        std::fs::write(&file, closure_expression(specs)).expect("write closure expression");
        let out = run(
            "nix-build a test closure",
            self.command("nix-build").arg(&file).args([
                "--no-out-link",
                "--quiet",
                "--argstr",
                "salt",
                salt,
            ]),
        );
        let paths: Vec<String> = out.lines().map(str::to_string).collect();
        assert_eq!(paths.len(), specs.len(), "nix-build printed {out}");
        paths
    }

    /// `nix path-info --json --recursive` of `paths`, parsed.
    pub fn path_info(&self, paths: &[String]) -> serde_json::Value {
        let out = run(
            "nix path-info",
            self.command("nix")
                .args(["path-info", "--json", "--recursive"])
                .args(paths),
        );
        serde_json::from_str(&out).expect("nix path-info prints JSON")
    }

    /// A fresh, empty chroot store to substitute into; pass it as `--store`/`--to`.
    pub fn fresh_store(&self, test: &str) -> PathBuf {
        let dir = self.work.join(format!("store-{}", unique_name(test)));
        std::fs::create_dir_all(&dir).expect("create fresh store dir");
        dir
    }

    /// Folder the configuration lives in (`NIX_CONF_DIR`).
    pub fn conf_dir(&self) -> &Path {
        &self.conf_dir
    }
}

/// A Nix expression taking `salt` and building `specs` with /bin/sh and coreutils only.
fn closure_expression(specs: &[PathSpec]) -> String {
    let mut body = String::from(
        "{ salt }:\nlet\n  mk = name: size: text: deps: derivation {\n    inherit name salt;\n    \
         system = builtins.currentSystem;\n    builder = \"/bin/sh\";\n    args = [ \"-c\" (''\n      \
         /bin/mkdir -p $out\n      /usr/bin/head -c ${toString size} /dev/urandom > $out/blob\n      \
         echo \"${builtins.concatStringsSep \" \" (map toString deps)}\" > $out/refs\n    '' + \
         (if text == 0 then \"\" else ''\n      /bin/mkdir -p $out/share\n      \
         /usr/bin/od -v -A d -t u1 /dev/urandom | /usr/bin/head -c ${toString (text / 2)} > $out/share/dump.txt\n      \
         /usr/bin/head -c ${toString text} /dev/urandom | /usr/bin/base64 | \
         /usr/bin/head -c ${toString (text - text / 2)} > $out/share/data.b64\n    '')) ];\n  };\n",
    );
    for (i, spec) in specs.iter().enumerate() {
        let refs: Vec<String> = spec.refs.iter().map(|r| format!("p{r}")).collect();
        body.push_str(&format!(
            "  p{i} = mk \"{}\" {} {} [ {} ];\n",
            spec.name,
            spec.size,
            spec.text,
            refs.join(" ")
        ));
    }
    let all: Vec<String> = (0..specs.len()).map(|i| format!("p{i}")).collect();
    body.push_str(&format!("in [ {} ]\n", all.join(" ")));
    body
}
