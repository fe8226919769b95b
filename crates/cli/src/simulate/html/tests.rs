use super::*;
use crate::simulate::output::UnschedulableReport;
use karpenter_solver::Plan;

fn report_with(pod: &str, reason: &str) -> Report {
    let mut r = super::super::output::report(&Plan {
        node_claims: vec![],
        existing_nodes: vec![],
        unschedulable: vec![],
        total_price: 0.0,
        lower_bound: 0.0,
    });
    r.unschedulable.push(UnschedulableReport {
        pod: pod.into(),
        reason: reason.into(),
    });
    r.protected.push((pod.into(), reason.into()));
    r
}

#[test]
fn input_text_never_becomes_markup() {
    let page = render(&report_with(
        "ns/<script>alert(1)</script>",
        "needs <b>\"500\"</b> cpu & more",
    ));
    // The page has no script of its own, so any `<script` would be injected.
    assert!(!page.contains("<script"), "{page}");
    assert!(!page.contains("<b>\""));
    assert!(page.contains("ns/&lt;script&gt;alert(1)&lt;/script&gt;"));
    assert!(page.contains("needs &lt;b&gt;&quot;500&quot;&lt;/b&gt; cpu &amp; more"));
}

#[test]
fn the_page_is_self_contained() {
    let page = render(&report_with("default/a", "r"));
    assert!(page.starts_with("<!DOCTYPE html>"));
    assert!(page.contains("Content-Security-Policy"));
    for fetch in ["src=", "href=", "url(", "@import", "http://", "https://"] {
        assert!(!page.contains(fetch), "{fetch} in the page");
    }
    assert_eq!(
        page.matches("data-chart=").count(),
        2,
        "cpu and memory charts"
    );
}
