//! `cargo xtask`: fortilab's task runner (the Rust "xtask" convention; the alias is in
//! `.cargo/config.toml`).
//!
//! - `cargo xtask test [ARGS]`: sets up what the tests need while the test binaries build
//!   (`cargo test --workspace --no-run [ARGS]`: the set-up waits on the network and apt, the
//!   build on the CPU), then runs `cargo test --workspace [ARGS]`. This is the README's test
//!   command and what `.ci/run` runs.
//! - `cargo xtask bench [ARGS]`: the same set-up, then `cargo bench [ARGS]`.
//! - `cargo xtask setup`: only the set-up; prints the environment the tests read.
//!
//! Set-up: the Debian packages whose programs the tests drive are installed when missing
//! (`apt-get`, as root or through `sudo -n`; otherwise the exact command is printed and the task
//! stops), and a project-local Python virtual environment is created under
//! `<target>/venv` from the pinned `tests/python-requirements.txt` (re-created when that file
//! changes) with `python3` from PATH, or the interpreter `FORTILAB_VENV_PYTHON` names. The
//! tests find that interpreter through `FORTILAB_PYTHON`.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};

/// A program the tests run, and the Debian package that provides it.
struct Tool {
    program: &'static str,
    package: &'static str,
    used_by: &'static str,
}

const TOOLS: &[Tool] = &[
    Tool {
        program: "curl",
        package: "curl",
        used_by: "README walkthrough, data-plane tests",
    },
    Tool {
        program: "jq",
        package: "jq",
        used_by: "README walkthrough",
    },
    Tool {
        program: "rsyslogd",
        package: "rsyslog",
        used_by: "syslog to a real rsyslog",
    },
    Tool {
        program: "ssh",
        package: "openssh-client",
        used_by: "device consoles with OpenSSH",
    },
    Tool {
        program: "ip",
        package: "iproute2",
        used_by: "namespaces mode (network namespaces, veths, routes, tc netem)",
    },
    Tool {
        program: "iptables",
        package: "iptables",
        used_by: "namespaces mode (the FortiGate's transparent proxy redirect)",
    },
    Tool {
        program: "chromium",
        package: "chromium",
        used_by: "dashboard in a real browser",
    },
    Tool {
        program: "chromedriver",
        package: "chromium-driver",
        used_by: "dashboard in a real browser (selenium)",
    },
];

/// Where the tests' Python environment lives, relative to the target directory.
const VENV: &str = "venv";
const REQUIREMENTS: &str = "tests/python-requirements.txt";
/// Stamp in the venv: the hash of the requirements it was built from.
const STAMP: &str = ".fortilab-requirements.sha256";
/// The interpreter to make the venv from (default: `python3` on PATH).
const VENV_PYTHON: &str = "FORTILAB_VENV_PYTHON";

fn main() -> ExitCode {
    match run() {
        Ok(code) => code,
        Err(e) => {
            eprintln!("xtask: error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn run() -> Result<ExitCode> {
    let mut args = std::env::args_os().skip(1);
    let task = args.next().map(|a| a.to_string_lossy().into_owned());
    let rest: Vec<OsString> = args.collect();
    match task.as_deref() {
        Some("test") => test(&rest),
        Some("bench") => {
            let env = setup()?;
            cargo(&env, "bench", &[], &rest)
        }
        Some("image") => image(&rest),
        Some("setup") => {
            let env = setup()?;
            println!("export FORTILAB_PYTHON={}", env.python.display());
            println!("export PATH={}", env.path.to_string_lossy());
            Ok(ExitCode::SUCCESS)
        }
        _ => {
            eprintln!(
                "usage: cargo xtask test [CARGO TEST ARGS]   set up, then cargo test --workspace\n\
                 \x20      cargo xtask bench [CARGO BENCH ARGS] set up, then cargo bench\n\
                 \x20      cargo xtask image [--release] [TAG]  build fortilab, then the OCI image (oci/build-image.sh; no registry)\n\
                 \x20      cargo xtask setup                    only set up (Debian packages, {REQUIREMENTS} in <target>/{VENV})"
            );
            Ok(ExitCode::from(2))
        }
    }
}

/// `cargo xtask test [ARGS]`: the set-up on a thread while `cargo test --no-run` builds the
/// test binaries, then the tests. The set-up's result is the same environment the build and
/// the run get ([`planned_env`]), so the run rebuilds nothing.
fn test(rest: &[OsString]) -> Result<ExitCode> {
    let env = planned_env();
    let setting_up = std::thread::spawn(setup);
    // The build takes the cargo options, not the test binaries' (after `--`).
    let build_args: Vec<OsString> = rest.iter().take_while(|a| *a != "--").cloned().collect();
    let built = cargo(&env, "test", &["--workspace", "--no-run"], &build_args);
    // Always wait for the set-up: never leave apt or pip half done.
    let set_up = setting_up
        .join()
        .map_err(|_| anyhow::anyhow!("the set-up thread panicked"))?;
    let built = built?;
    set_up?;
    if built != ExitCode::SUCCESS {
        return Ok(built);
    }
    cargo(&env, "test", &["--workspace"], rest)
}

/// `cargo xtask image [--release] [TAG]`: builds the `fortilab` binary (debug unless
/// `--release`) and the `FROM scratch` image around it with `oci/build-image.sh`.
fn image(args: &[OsString]) -> Result<ExitCode> {
    let root = workspace_root();
    let release = args.iter().any(|a| a == "--release");
    let tag = args
        .iter()
        .map(|a| a.to_string_lossy().into_owned())
        .find(|a| !a.starts_with("--"))
        .unwrap_or_else(|| "fortilab:dev".to_string());
    let cargo_bin = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut build = Command::new(cargo_bin);
    build
        .current_dir(&root)
        .args(["build", "-p", "fortilab", "--bin", "fortilab"]);
    if release {
        build.arg("--release");
    }
    let st = build.status().context("cargo build")?;
    if !st.success() {
        return Ok(ExitCode::from(1));
    }
    let bin = target_dir(&root)
        .join(if release { "release" } else { "debug" })
        .join("fortilab");
    let st = Command::new(root.join("oci/build-image.sh"))
        .arg(&bin)
        .arg(&tag)
        .status()
        .context("oci/build-image.sh")?;
    Ok(if st.success() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// What the set-up gives the cargo command it runs.
struct TestEnv {
    python: PathBuf,
    path: OsString,
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_path_buf()
}

fn target_dir(root: &Path) -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(d) if !d.is_empty() => {
            let d = PathBuf::from(d);
            if d.is_absolute() {
                d
            } else {
                root.join(d)
            }
        }
        _ => root.join("target"),
    }
}

/// The directories searched for programs: PATH plus the sbin directories (rsyslogd lives in
/// /usr/sbin, which is not on an ordinary user's PATH).
fn search_path() -> OsString {
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    for extra in ["/usr/local/sbin", "/usr/sbin", "/sbin"] {
        let p = PathBuf::from(extra);
        if !dirs.contains(&p) {
            dirs.push(p);
        }
    }
    std::env::join_paths(dirs).expect("PATH entries hold no separator")
}

fn find_program(name: &str, path: &OsString) -> Option<PathBuf> {
    std::env::split_paths(path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// The environment the set-up gives the tests (`<target>/venv`'s interpreter, its `bin`
/// first on PATH), known before the set-up has run.
fn planned_env() -> TestEnv {
    let venv = target_dir(&workspace_root()).join(VENV);
    let mut dirs = vec![venv.join("bin")];
    dirs.extend(std::env::split_paths(&search_path()));
    TestEnv {
        python: venv.join("bin").join("python"),
        path: std::env::join_paths(dirs).expect("PATH entries hold no separator"),
    }
}

fn setup() -> Result<TestEnv> {
    let root = workspace_root();
    let path = search_path();

    // 1. Debian packages.
    let mut missing: Vec<&Tool> = TOOLS
        .iter()
        .filter(|t| find_program(t.program, &path).is_none())
        .collect();
    let python_ok = python_can_make_venvs(&path);
    let mut packages: Vec<&str> = missing.iter().map(|t| t.package).collect();
    if !python_ok {
        packages.extend(["python3", "python3-venv"]);
    }
    if !packages.is_empty() {
        for t in &missing {
            eprintln!(
                "xtask: {} is missing (Debian package {}; used by: {})",
                t.program, t.package, t.used_by
            );
        }
        if !python_ok {
            eprintln!("xtask: python3 with the venv module is missing (Debian packages python3 python3-venv)");
        }
        apt_install(&packages)?;
        missing.retain(|t| find_program(t.program, &path).is_none());
        if let Some(t) = missing.first() {
            bail!(
                "{} is still missing after installing {}",
                t.program,
                t.package
            );
        }
    }

    // 2. The Python environment.
    let venv = target_dir(&root).join(VENV);
    let python = venv.join("bin").join("python");
    let req_path = root.join(REQUIREMENTS);
    let requirements =
        std::fs::read(&req_path).with_context(|| format!("reading {}", req_path.display()))?;
    // The interpreter the venv is made from is part of its identity when chosen explicitly.
    let base = venv_base_python(&path);
    let mut id = requirements.clone();
    if std::env::var_os(VENV_PYTHON).is_some() {
        if let Some(b) = &base {
            id.push(0);
            id.extend_from_slice(b.as_os_str().as_encoded_bytes());
        }
    }
    let want = hex::encode(Sha256::digest(&id));
    let stamp = venv.join(STAMP);
    let have = std::fs::read_to_string(&stamp).unwrap_or_default();
    if !python.is_file() || have.trim() != want {
        eprintln!(
            "xtask: creating the tests' Python environment {} from {REQUIREMENTS}",
            venv.display()
        );
        let py3 = base.context("python3 not found")?;
        run_checked(
            Command::new(py3).args(["-m", "venv", "--clear"]).arg(&venv),
            "python3 -m venv",
        )?;
        run_checked(
            Command::new(&python)
                .args([
                    "-m",
                    "pip",
                    "install",
                    "--quiet",
                    "--disable-pip-version-check",
                    "--no-input",
                    "-r",
                ])
                .arg(&req_path),
            "pip install -r tests/python-requirements.txt",
        )?;
        std::fs::write(&stamp, format!("{want}\n"))
            .with_context(|| format!("writing {}", stamp.display()))?;
    }

    Ok(planned_env())
}

/// The interpreter the tests' venv is made from: `FORTILAB_VENV_PYTHON` if set, else the
/// first `python3` on PATH. Ansible's per-task cost is Python start-up and imports, so an
/// interpreter built with PGO/LTO (a distribution's `python3`) runs the Ansible judge faster
/// than one built without (pyenv's default build): BENCHMARKS.md, "Ansible judge".
fn venv_base_python(path: &OsString) -> Option<PathBuf> {
    match std::env::var_os(VENV_PYTHON).filter(|p| !p.is_empty()) {
        Some(p) => Some(PathBuf::from(p)),
        None => find_program("python3", path),
    }
}

fn python_can_make_venvs(path: &OsString) -> bool {
    let Some(py3) = venv_base_python(path) else {
        return false;
    };
    Command::new(py3)
        .args(["-c", "import venv, ensurepip"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

fn apt_install(packages: &[&str]) -> Result<()> {
    let line = format!(
        "apt-get update && apt-get install -y --no-install-recommends {}",
        packages.join(" ")
    );
    let prefix: Vec<&str> = if is_root() {
        vec![]
    } else if Command::new("sudo")
        .args(["-n", "true"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
    {
        vec!["sudo", "-n"]
    } else {
        bail!(
            "the tests need Debian packages that are not installed, and this user cannot \
             install them (not root, no password-less sudo). Install them with:\n\n    \
             sudo sh -c '{line}'\n\nthen run `cargo xtask test` again."
        );
    };
    eprintln!("xtask: installing {}", packages.join(" "));
    let apt = |args: &[&str]| -> Result<()> {
        let mut cmd = if prefix.is_empty() {
            Command::new("apt-get")
        } else {
            let mut c = Command::new(prefix[0]);
            c.args(&prefix[1..]).arg("apt-get");
            c
        };
        cmd.args(args).env("DEBIAN_FRONTEND", "noninteractive");
        run_checked(&mut cmd, &format!("apt-get {}", args.join(" ")))
    };
    apt(&["update", "-qq"]).with_context(|| format!("install by hand: {line}"))?;
    let mut install = vec!["install", "-y", "-qq", "--no-install-recommends"];
    install.extend_from_slice(packages);
    apt(&install).with_context(|| format!("install by hand: {line}"))
}

fn run_checked(cmd: &mut Command, what: &str) -> Result<()> {
    let st = cmd
        .status()
        .with_context(|| format!("could not run {what}"))?;
    if !st.success() {
        bail!("{what} failed ({st})");
    }
    Ok(())
}

fn cargo(env: &TestEnv, sub: &str, fixed: &[&str], rest: &[OsString]) -> Result<ExitCode> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let st = Command::new(cargo)
        .current_dir(workspace_root())
        .arg(sub)
        .args(fixed)
        .args(rest)
        .env("FORTILAB_PYTHON", &env.python)
        .env("PATH", &env.path)
        .status()
        .with_context(|| format!("could not run cargo {sub}"))?;
    Ok(match st.code() {
        Some(0) => ExitCode::SUCCESS,
        Some(c) => ExitCode::from(u8::try_from(c).unwrap_or(1)),
        None => ExitCode::FAILURE,
    })
}
