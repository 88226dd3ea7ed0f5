//! Flags, the shorthand, argv, exit codes and error messages.

use crate::support::*;

#[test]
fn help_documents_flags_defaults_and_exit_codes() {
    let out = wrun().args(["run", "--help"]).run();
    out.assert_success();
    for needle in [
        "--volume",
        "HOST:GUEST[:ro|:rw]",
        "--env",
        "--env-file",
        "--workdir",
        "--interactive",
        "--memory",
        "[default: 4g]",
        "--timeout",
        "--cpu-time",
        "--name",
        "Exit codes",
        "125",
        "126",
        "127",
        "134",
        "137",
    ] {
        out.assert_stdout_contains(needle);
    }
    wrun()
        .arg("--help")
        .run()
        .assert_success()
        .assert_stdout_contains("wrun APP [OPTIONS]");
    wrun()
        .arg("--version")
        .run()
        .assert_success()
        .assert_stdout_contains("wrun ");
}

#[test]
fn every_guest_app_compiles_for_both_targets() {
    let dir = tempdir();
    macro_rules! compile {
        ($app:ident) => {
            for (target, path) in [
                ("p1", p1_path(stringify!($app))),
                ("p2", p2_path(stringify!($app))),
            ] {
                let out = dir
                    .path()
                    .join(format!("{}-{target}.cwasm", stringify!($app)));
                wrun()
                    .args(["compile", path, "-o"])
                    .arg(&out)
                    .run()
                    .assert_success();
                assert!(out.is_file());
            }
        };
    }
    wrun_test_artifacts::foreach_app!(compile);
}

fn p1_path(app: &str) -> &'static str {
    app_path(&P1, app)
}

fn p2_path(app: &str) -> &'static str {
    app_path(&P2, app)
}

fn app_path(apps: &Apps, app: &str) -> &'static str {
    match app {
        "hello" => apps.hello,
        "args_env" => apps.args_env,
        "filetool" => apps.filetool,
        "memhog" => apps.memhog,
        "spin" => apps.spin,
        "trap" => apps.trap,
        "flood" => apps.flood,
        "echo_server" => apps.echo_server,
        "tcp_client" => apps.tcp_client,
        "udp_echo" => apps.udp_echo,
        "cgi" => apps.cgi,
        other => panic!("no test knows the guest app `{other}`; add it to tests/all/support.rs"),
    }
}

fn hello_runs(apps: &Apps) {
    wrun().args(["run", apps.hello]).run().assert_success();
    let out = wrun().arg(apps.hello).run();
    out.assert_success();
    assert_eq!(out.stdout, "Hello from a wrun guest!\n");
    assert_eq!(out.stderr, "");
}

fn argv_is_base_name_then_args(apps: &Apps) {
    let out = wrun()
        .args(["run", apps.args_env, "one", "-x", "--two", "three four"])
        .run();
    out.assert_success();
    let argv: Vec<&str> = out
        .stdout
        .lines()
        .filter(|l| l.starts_with("argv"))
        .collect();
    assert_eq!(
        argv,
        [
            "argv[0]=args_env.wasm",
            "argv[1]=one",
            "argv[2]=-x",
            "argv[3]=--two",
            "argv[4]=three four"
        ]
    );
}

fn shorthand_takes_options_before_and_after_app(apps: &Apps) {
    // The form our users wrote down: options after APP, guest args after `--`.
    let out = wrun()
        .args([apps.args_env, "-e", "A=1", "--", "x", "-e", "B=2"])
        .run();
    out.assert_success();
    out.assert_stdout_contains("env A=1\n")
        .assert_stdout_contains("argv[1]=x\n");
    out.assert_stdout_contains("argv[2]=-e\n")
        .assert_stdout_contains("argv[3]=B=2\n");
    assert!(!out.stdout.contains("env B=2"));
    // Options before APP work too.
    let out = wrun().args(["-e", "A=1", apps.args_env]).run();
    out.assert_success().assert_stdout_contains("env A=1\n");
    // Without `--`, a stray word after APP is an error, not a guest argument.
    wrun()
        .args([apps.args_env, "stray"])
        .run()
        .assert_code(125)
        .assert_stderr_contains("stray");
}

fn guest_exit_code_is_passed_through(apps: &Apps) {
    let out = wrun().args(["run", apps.args_env, "exit", "42"]).run();
    // Rust's std on wasip2 exits through `wasi:cli/exit.exit(err)`, which
    // carries no code: 1, exactly as under wasmtime.
    out.assert_code(if apps.target == "wasm32-wasip1" {
        42
    } else {
        1
    });
    wrun()
        .args(["run", apps.args_env, "exit", "0"])
        .run()
        .assert_success();
}

fn trap_exits_134_with_trap_and_backtrace(apps: &Apps) {
    let out = wrun().args(["run", apps.trap]).run();
    out.assert_code(134);
    out.assert_stderr_contains(
        "app `trap.wasm` trapped: wasm trap: wasm `unreachable` instruction executed",
    );
    out.assert_stderr_contains("wasm backtrace:");
    out.assert_stderr_contains("trap::innermost_function");
    out.assert_stderr_contains("trap::middle_function");

    let out = wrun().args(["run", apps.trap, "panic"]).run();
    out.assert_code(134)
        .assert_stderr_contains("the guest panicked on purpose");

    let out = wrun().args(["run", apps.trap, "stack"]).run();
    out.assert_code(134)
        .assert_stderr_contains("call stack exhausted");
}

fn name_is_shown_in_messages(apps: &Apps) {
    let out = wrun().args(["run", "--name", "api-1", apps.trap]).run();
    out.assert_code(134)
        .assert_stderr_contains("app `api-1` trapped");
}

fn kind_is_told_from_bytes_not_name(apps: &Apps) {
    let dir = tempdir();
    for name in ["hello.wat", "hello.txt", "hello"] {
        let path = copy_app(apps.hello, dir.path(), name);
        let out = wrun().arg("run").arg(&path).run();
        out.assert_success()
            .assert_stdout_contains("Hello from a wrun guest!");
    }
}

fn precompiled_artifacts_need_consent(apps: &Apps) {
    let dir = tempdir();
    let app = copy_app(apps.hello, dir.path(), "hello.wasm");
    wrun().arg("compile").arg(&app).run().assert_success();
    let cwasm = dir.path().join("hello.cwasm");
    assert!(cwasm.is_file(), "`wrun compile APP` writes APP.cwasm");
    let out = wrun().arg("run").arg(&cwasm).run();
    out.assert_code(126)
        .assert_stderr_contains("--allow-precompiled");
    let out = wrun()
        .args(["run", "--allow-precompiled"])
        .arg(&cwasm)
        .run();
    out.assert_success()
        .assert_stdout_contains("Hello from a wrun guest!");
    // Compiling an artifact again is refused.
    let out = wrun()
        .arg("compile")
        .arg(&cwasm)
        .arg("-o")
        .arg(dir.path().join("x"))
        .run();
    out.assert_code(126)
        .assert_stderr_contains("already precompiled");
}

for_both_targets!(
    hello_runs,
    argv_is_base_name_then_args,
    shorthand_takes_options_before_and_after_app,
    guest_exit_code_is_passed_through,
    trap_exits_134_with_trap_and_backtrace,
    name_is_shown_in_messages,
    kind_is_told_from_bytes_not_name,
    precompiled_artifacts_need_consent,
);

#[test]
fn wat_text_runs() {
    let dir = tempdir();
    let wat = dir.path().join("greet.wat");
    std::fs::write(
        &wat,
        r#"(module
             (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
             (memory (export "memory") 1)
             (data (i32.const 16) "hi from wat\n")
             (func (export "_start")
               (i32.store (i32.const 0) (i32.const 16))
               (i32.store (i32.const 4) (i32.const 12))
               (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))))"#,
    )
    .unwrap();
    let out = wrun().arg(&wat).run();
    out.assert_success();
    assert_eq!(out.stdout, "hi from wat\n");
}

/// A word that names no file and no local image is never sent to a
/// registry: in the subcommand's place it is a mistyped subcommand (with
/// clap's suggestion), elsewhere the shorthand says it does not pull.
#[test]
fn the_shorthand_never_pulls() {
    for (args, needle) in [
        (&["top"][..], "unrecognized subcommand 'top'"),
        (&["exec", "-it", "web"], "unrecognized subcommand 'exec'"),
        (
            &["-e", "A=1", "ps"],
            "`ps` is neither a file nor a local image",
        ),
        (
            &["127.0.0.1:9/nothing:1"],
            "`127.0.0.1:9/nothing:1` is neither a file nor a local image (`wrun APP` does not \
             pull; `wrun run 127.0.0.1:9/nothing:1` does)",
        ),
    ] {
        let out = wrun().args(args).run();
        out.assert_code(125).assert_stderr_contains(needle);
        assert!(!out.stderr.contains("pull it"), "{args:?}: {}", out.stderr);
        assert!(!out.stderr.contains("pulling"), "{args:?}: {}", out.stderr);
    }
    wrun()
        .arg("buidl")
        .run()
        .assert_code(125)
        .assert_stderr_contains("tip: a similar subcommand exists: 'build'");
}

#[test]
fn missing_app_exits_127() {
    let out = wrun().args(["run", "/nonexistent/app.wasm"]).run();
    out.assert_code(127)
        .assert_stderr_contains("`/nonexistent/app.wasm`: no such file");
}

#[test]
fn invalid_apps_exit_126_with_a_reason() {
    let dir = tempdir();
    let cases: &[(&str, &[u8], &str)] = &[
        ("empty.wasm", b"", "the file is empty"),
        (
            "random.wasm",
            &[0xff, 0x00, 0x13, 0x37, 0x80, 0x81],
            "not WebAssembly",
        ),
        (
            "truncated.wasm",
            b"\0asm\x01\0\0\0\x01",
            "failed to parse WebAssembly module",
        ),
        ("broken.wat", b"(module (func", "expected"),
        (
            "reactor.wat",
            b"(module (func (export \"_initialize\")))",
            "no `_start`",
        ),
    ];
    for (name, bytes, reason) in cases {
        let path = dir.path().join(name);
        std::fs::write(&path, bytes).unwrap();
        let out = wrun().arg("run").arg(&path).run();
        out.assert_code(126)
            .assert_stderr_contains(name)
            .assert_stderr_contains(reason);
    }
    let out = wrun().arg("run").arg(dir.path()).run();
    out.assert_code(126)
        .assert_stderr_contains("it is a directory");
}

/// Errors raised while instantiating, before any of the app's code runs,
/// mean the app could not start (126); code of the app that runs and traps
/// during instantiation (a start function) is a trap (134); a memory limit
/// reached while instantiating is a limit (137).
#[test]
fn instantiation_failures_are_told_from_traps() {
    let dir = tempdir();
    let start = r#"(func (export "_start"))"#;
    let cases: &[(&str, String, i32, &str)] = &[
        (
            "shared-memory.wat",
            format!("(module (memory 1 1 shared) {start})"),
            126,
            "could not start: shared memory support is disabled",
        ),
        (
            "data-out-of-bounds.wat",
            format!(r#"(module (memory 1) (data (i32.const 70000) "x") {start})"#),
            126,
            "could not start",
        ),
        (
            "elem-out-of-bounds.wat",
            format!("(module (table 1 funcref) (func $f) (elem (i32.const 5) $f) {start})"),
            126,
            "could not start",
        ),
        (
            "start-signature.wat",
            r#"(module (func (export "_start") (param i32)))"#.to_owned(),
            126,
            "could not start",
        ),
        (
            "start-function-traps.wat",
            format!("(module (func $s unreachable) (start $s) {start})"),
            134,
            "trapped: wasm trap: wasm `unreachable` instruction executed",
        ),
        (
            "initialize-traps.wat",
            format!(r#"(module (func (export "_initialize") unreachable) {start})"#),
            134,
            "trapped",
        ),
        (
            "memory-over-limit.wat",
            format!("(module (memory 2000) {start})"),
            137,
            "memory limit of 64 MiB exceeded",
        ),
    ];
    for (name, text, code, needle) in cases {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        let out = wrun().args(["run", "-m", "64m"]).arg(&path).run();
        out.assert_code(*code)
            .assert_stderr_contains(name)
            .assert_stderr_contains(needle);
        assert!(
            !out.stderr.contains("failed to instantiate"),
            "the marker is not shown: {out:#?}"
        );
    }
}

/// A reason is printed once, however the error that carries it is built
/// (here the io error of a store that cannot be created, which the image
/// store's own message quotes, and which was also its error's source).
#[test]
fn reasons_are_printed_once() {
    let dir = tempdir();
    let home = dir.path().join("file");
    std::fs::write(&home, "a file, not a directory").unwrap();
    for args in [
        &["images"][..],
        &["load", "-i", "/dev/null"],
        &["run", "img:1"],
    ] {
        let out = wrun().home(&home).args(args).run();
        assert_ne!(out.code, 0);
        assert_eq!(
            out.stderr.matches("Not a directory").count(),
            1,
            "{args:?}: {out:#?}"
        );
    }
}

#[test]
fn truncated_components_never_panic() {
    let bytes = std::fs::read(P2.hello).unwrap();
    let dir = tempdir();
    let path = dir.path().join("cut.wasm");
    for cut in [
        9,
        12,
        50,
        100,
        1000,
        bytes.len() / 3,
        bytes.len() / 2,
        bytes.len() - 1,
    ] {
        std::fs::write(&path, &bytes[..cut]).unwrap();
        // `run` asserts that stderr has no panic message.
        wrun().arg("run").arg(&path).run().assert_code(126);
    }
}

#[test]
fn unknown_imports_are_all_listed() {
    let dir = tempdir();
    let module = dir.path().join("needs-env.wat");
    std::fs::write(
        &module,
        r#"(module
             (import "wasi_snapshot_preview1" "fd_write" (func (param i32 i32 i32 i32) (result i32)))
             (import "env" "foo" (func))
             (import "env" "table" (table 1 funcref))
             (func (export "_start")))"#,
    )
    .unwrap();
    let out = wrun().arg("run").arg(&module).run();
    out.assert_code(126);
    out.assert_stderr_contains("env::foo (function)")
        .assert_stderr_contains("env::table (table)");
    assert!(
        !out.stderr.contains("fd_write"),
        "provided imports are not listed: {out:#?}"
    );

    let component = dir.path().join("needs-acme.wat");
    std::fs::write(
        &component,
        r#"(component
             (import "acme:thing/api@1.0.0" (instance (export "f" (func))))
             (import "wasi:cli/environment@0.2.0" (instance (export "get-arguments" (func (result (list string))))))
             (import "other:pkg/x" (instance (export "g" (func (param "a" u32))))))"#,
    )
    .unwrap();
    let out = wrun().arg("run").arg(&component).run();
    out.assert_code(126);
    out.assert_stderr_contains("acme:thing/api@1.0.0")
        .assert_stderr_contains("other:pkg/x");
    assert!(
        !out.stderr.contains("wasi:cli/environment"),
        "provided imports are not listed: {out:#?}"
    );
}

#[test]
fn component_without_run_export_is_explained() {
    let dir = tempdir();
    let path = dir.path().join("lib.wat");
    std::fs::write(&path, "(component)").unwrap();
    let out = wrun().arg("run").arg(&path).run();
    out.assert_code(126)
        .assert_stderr_contains("does not export `wasi:cli/run`");
}

#[test]
fn bad_flags_exit_125_naming_the_value() {
    let dir = tempdir();
    let file = dir.path().join("file.txt");
    std::fs::write(&file, "x").unwrap();
    let file_volume = format!("{}:/f", file.display());
    let missing_volume = format!("{}/missing:/m", dir.path().display());
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["--memory", "lots"], "`lots`"),
        (vec!["--memory", "0"], "greater than zero"),
        (vec!["--timeout", "soon"], "`soon`"),
        (vec!["--cpu-time", "0s"], "greater than zero"),
        (vec!["-v", "data:/data"], "named volumes are not supported"),
        (vec!["-v", "./data"], "HOST:GUEST"),
        (vec!["-v", "./data:relative"], "must be absolute"),
        (vec!["-v", "./data:/a/../b"], "`.` or `..`"),
        (vec!["-v", "./data:/data:rx"], "unknown mode `rx`"),
        (vec!["-v", &missing_volume], "no such directory"),
        (vec!["-v", &file_volume], "not a directory"),
        (vec!["--name", "a b"], "`a b` is not a valid name"),
        (vec!["-w", "/nowhere"], "not inside any volume"),
        (vec!["-e", "A B=1"], "contains whitespace"),
        (vec!["-e", "=1"], "name is empty"),
        (vec!["--env-file", "/nonexistent.env"], "`/nonexistent.env`"),
        (vec!["--no-such-flag"], "--no-such-flag"),
    ];
    for (flags, needle) in cases {
        let out = wrun().arg("run").args(&flags).arg(P2.hello).run();
        out.assert_code(125).assert_stderr_contains(needle);
        assert_eq!(out.stdout, "", "nothing ran for {flags:?}");
    }
}

#[test]
fn duplicate_mount_points_are_refused() {
    let dir = tempdir();
    let a = format!("{}:/data", dir.path().display());
    let out = wrun().args(["run", "-v", &a, "-v", &a, P2.hello]).run();
    out.assert_code(125)
        .assert_stderr_contains("duplicate mount point `/data`");
}
