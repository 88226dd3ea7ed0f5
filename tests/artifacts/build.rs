//! Compiles the guest programs in `wasm-apps/` for wasm32-wasip1 (core modules) and
//! wasm32-wasip2 (components) and generates one path constant per app and target,
//! plus a `foreach_app!` macro listing every app, so each app must be used by a test.
//! The component guests, packages of that workspace built for wasm32-wasip2 only,
//! get one constant each in their own module: WASI 0.3 commands in `p3`,
//! `wasi:http/proxy` components in `http`.

use std::env;
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

const TARGETS: [(&str, &str); 2] = [("p1", "wasm32-wasip1"), ("p2", "wasm32-wasip2")];

/// A generated module with one constant per component package of `wasm-apps/`,
/// each built for `PACKAGE_TARGET` only.
struct PackageModule {
    name: &'static str,
    doc: &'static str,
    /// (constant, package). Each package is a `cdylib`, so its component is
    /// named after the package.
    packages: &'static [(&'static str, &'static str)],
}

const PACKAGE_MODULES: [PackageModule; 2] = [
    PackageModule {
        name: "p3",
        doc: "WASI 0.3 commands",
        packages: &[("HELLO", "p3-hello")],
    },
    PackageModule {
        name: "http",
        doc: "`wasi:http/proxy` components",
        packages: &[("HELLO", "http-hello"), ("FN", "http-fn")],
    },
];
const PACKAGE_TARGET: &str = "wasm32-wasip2";

fn main() {
    let manifest_dir = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let workspace = manifest_dir
        .ancestors()
        .nth(2)
        .expect("tests/artifacts lives two levels below the workspace root")
        .to_path_buf();
    let apps_dir = workspace.join("wasm-apps");
    println!("cargo:rerun-if-changed={}", apps_dir.join("src").display());
    println!(
        "cargo:rerun-if-changed={}",
        apps_dir.join("Cargo.toml").display()
    );
    println!(
        "cargo:rerun-if-changed={}",
        apps_dir.join("Cargo.lock").display()
    );
    let packages = || {
        PACKAGE_MODULES
            .iter()
            .flat_map(|module| module.packages.iter().map(|&(_, package)| package))
    };
    for package in packages() {
        println!(
            "cargo:rerun-if-changed={}",
            apps_dir.join(package).display()
        );
    }

    check_targets_installed();

    // A separate target directory: the outer cargo holds the lock on its own.
    let target_dir = match env::var_os("CARGO_TARGET_DIR").map(PathBuf::from) {
        Some(dir) if dir.is_absolute() => dir,
        Some(dir) => workspace.join(dir),
        None => workspace.join("target"),
    }
    .join("wasm-apps");

    // Without `--package`, cargo builds only the root package (the apps in
    // src/bin); the component packages are built for their one target below.
    let mut triples = Vec::new();
    for (_, triple) in TARGETS {
        triples.extend(["--target", triple]);
    }
    build_guests(&apps_dir, &target_dir, &triples);
    let mut package_args = vec!["--target", PACKAGE_TARGET];
    for package in packages() {
        package_args.extend(["--package", package]);
    }
    build_guests(&apps_dir, &target_dir, &package_args);

    let apps = app_names(&apps_dir.join("src/bin"));
    let mut code = String::new();
    for (module, triple) in TARGETS {
        writeln!(code, "/// Guest apps built for `{triple}`.").unwrap();
        writeln!(code, "pub mod {module} {{").unwrap();
        for app in &apps {
            let path = target_dir
                .join(triple)
                .join("release")
                .join(format!("{app}.wasm"));
            write_const(&mut code, &app.to_uppercase(), &path);
        }
        writeln!(code, "}}").unwrap();
    }
    for module in &PACKAGE_MODULES {
        writeln!(code, "/// {}, built for `{PACKAGE_TARGET}`.", module.doc).unwrap();
        writeln!(code, "pub mod {} {{", module.name).unwrap();
        for (name, package) in module.packages {
            let wasm = format!("{}.wasm", package.replace('-', "_"));
            write_const(
                &mut code,
                name,
                &target_dir.join(PACKAGE_TARGET).join("release").join(wasm),
            );
        }
        writeln!(code, "}}").unwrap();
    }
    writeln!(
        code,
        "/// Invokes `$mac!(app_name)` once for every guest app."
    )
    .unwrap();
    writeln!(
        code,
        "#[macro_export]\nmacro_rules! foreach_app {{\n    ($mac:ident) => {{"
    )
    .unwrap();
    for app in &apps {
        writeln!(code, "        $mac!({app});").unwrap();
    }
    writeln!(code, "    }};\n}}").unwrap();

    let out = PathBuf::from(env::var_os("OUT_DIR").expect("set by cargo")).join("apps.rs");
    fs::write(&out, code).unwrap_or_else(|e| panic!("failed to write {}: {e}", out.display()));
}

/// Writes `pub const NAME: &str = "path";` for a guest that must exist.
fn write_const(code: &mut String, name: &str, path: &Path) {
    assert!(
        path.is_file(),
        "expected {} after the build",
        path.display()
    );
    writeln!(
        code,
        "    pub const {name}: &str = {:?};",
        path.display().to_string()
    )
    .unwrap();
}

/// Runs `cargo build --release` on the `wasm-apps/` workspace with `args`.
fn build_guests(apps_dir: &Path, target_dir: &Path, args: &[&str]) {
    let mut cmd = Command::new(env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cmd.arg("build")
        .arg("--release")
        .arg("--quiet")
        .arg("--locked")
        .arg("--manifest-path")
        .arg(apps_dir.join("Cargo.toml"))
        .arg("--target-dir")
        .arg(target_dir)
        .args(args);
    // Guests must not inherit the host build's flags (e.g. `-C target-cpu=native`
    // or instrumentation), nor the clippy driver that `cargo clippy` installs.
    for var in [
        "RUSTFLAGS",
        "CARGO_ENCODED_RUSTFLAGS",
        "CARGO_BUILD_RUSTFLAGS",
        "RUSTC_WRAPPER",
        "RUSTC_WORKSPACE_WRAPPER",
        "CARGO_BUILD_TARGET",
        "CARGO_TARGET_DIR",
        "CARGO_PROFILE_RELEASE_OPT_LEVEL",
    ] {
        cmd.env_remove(var);
    }
    let status = cmd
        .status()
        .unwrap_or_else(|e| panic!("failed to run cargo for wasm-apps: {e}"));
    assert!(
        status.success(),
        "building wasm-apps ({}) failed ({status}); see the errors above",
        args.join(" ")
    );
}

/// Fails the build with the command to run when a wasm target is missing, rather
/// than with rustc's "can't find crate for `std`".
fn check_targets_installed() {
    let rustc = env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let output = Command::new(rustc)
        .args(["--print", "sysroot"])
        .output()
        .unwrap_or_else(|e| panic!("failed to run rustc --print sysroot: {e}"));
    let sysroot = PathBuf::from(String::from_utf8_lossy(&output.stdout).trim());
    let missing: Vec<&str> = TARGETS
        .iter()
        .map(|(_, triple)| *triple)
        .filter(|triple| !sysroot.join("lib/rustlib").join(triple).is_dir())
        .collect();
    assert!(
        missing.is_empty(),
        "the guest apps need the wasm targets {missing:?}; install them with:\n\n    \
         rustup target add wasm32-wasip1 wasm32-wasip2\n"
    );
}

fn app_names(bin_dir: &Path) -> Vec<String> {
    let mut apps: Vec<String> = fs::read_dir(bin_dir)
        .unwrap_or_else(|e| panic!("failed to list {}: {e}", bin_dir.display()))
        .filter_map(|entry| {
            let path = entry.ok()?.path();
            (path.extension()? == "rs").then(|| path.file_stem()?.to_str().map(str::to_owned))?
        })
        .collect();
    apps.sort();
    apps
}
