//! The demo (`cargo xtask demo`) as a test, so it cannot rot.
#[test]
fn demo_task_runs_and_reports() {
    let root = tempfile::Builder::new()
        .prefix("copilot-demo-")
        .tempdir()
        .expect("tempdir");
    let report = integration_test::demo::run(&root.path().join("demo"))
        .unwrap_or_else(|e| panic!("demo failed: {e}"));
    assert_eq!(report.outputs.literals.len(), 5, "{:?}", report.outputs);
    let ms = report.since_exit_ms.expect("since_exit_ms reported");
    assert!(ms > 0.0 && ms < 10_000.0, "{ms} ms");
    assert!(
        report.lines.iter().any(|l| l.contains("exit code 0")),
        "{:#?}",
        report.lines
    );
}
