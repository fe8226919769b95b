//! Inline SVG charts (no script, no library): nodes by utilisation, before and after.

use std::fmt::Write as _;

use super::markup::{Esc, pct};
use crate::simulate::utilization::NodeUtilization;

/// Buckets of 10 percentage points; the last one also takes anything above 100 % (a node
/// the input already overcommits).
const BUCKETS: usize = 10;

/// Which share of allocatable a chart shows.
#[derive(Clone, Copy)]
pub enum Resource {
    /// cpu requested of allocatable.
    Cpu,
    /// memory requested of allocatable.
    Memory,
}

impl Resource {
    pub fn name(self) -> &'static str {
        match self {
            Resource::Cpu => "cpu",
            Resource::Memory => "memory",
        }
    }

    /// (requested, allocatable).
    pub fn of(self, n: &NodeUtilization) -> (f64, f64) {
        match self {
            Resource::Cpu => (
                n.cpu_requested_millis as f64,
                n.cpu_allocatable_millis as f64,
            ),
            Resource::Memory => (
                n.memory_requested_bytes as f64,
                n.memory_allocatable_bytes as f64,
            ),
        }
    }
}

/// The bucket of one node; a node with nothing allocatable but something requested is full.
fn bucket(n: &NodeUtilization, r: Resource) -> usize {
    let (used, alloc) = r.of(n);
    let p = if alloc <= 0.0 && used > 0.0 {
        100.0
    } else {
        pct(used, alloc)
    };
    ((p / 10.0).floor() as usize).min(BUCKETS - 1)
}

fn histogram(nodes: &[NodeUtilization], r: Resource) -> [usize; BUCKETS] {
    let mut counts = [0; BUCKETS];
    for n in nodes {
        counts[bucket(n, r)] += 1;
    }
    counts
}

/// A grouped bar chart: for each 10 % bucket, how many nodes were there before (grey) and
/// after (blue).
pub fn utilization_histogram(
    before: &[NodeUtilization],
    after: &[NodeUtilization],
    r: Resource,
) -> String {
    const W: f64 = 560.0;
    const H: f64 = 240.0;
    const LEFT: f64 = 40.0;
    const BOTTOM: f64 = 40.0;
    const TOP: f64 = 28.0;
    let (b, a) = (histogram(before, r), histogram(after, r));
    let max = b.iter().chain(&a).copied().max().unwrap_or(0).max(1);
    let plot_h = H - BOTTOM - TOP;
    let slot = (W - LEFT - 10.0) / BUCKETS as f64;
    let bar = (slot - 8.0) / 2.0;
    let y = |count: usize| TOP + plot_h * (1.0 - count as f64 / max as f64);
    let mut svg = String::new();
    let _ = write!(
        svg,
        "<svg class=\"chart\" viewBox=\"0 0 {W} {H}\" width=\"{W}\" height=\"{H}\" role=\"img\" \
         aria-label=\"nodes by {name} requested of allocatable\" data-chart=\"{name}\">\
         <text x=\"{LEFT}\" y=\"16\" class=\"t\">Nodes by {name} requested / allocatable</text>",
        name = r.name()
    );
    // Horizontal grid: 0, half and max node counts.
    for count in [0, max / 2, max] {
        let yy = y(count);
        let _ = write!(
            svg,
            "<line x1=\"{LEFT}\" x2=\"{x2}\" y1=\"{yy:.1}\" y2=\"{yy:.1}\" class=\"grid\"/>\
             <text x=\"{tx}\" y=\"{ty:.1}\" class=\"ax\" text-anchor=\"end\">{count}</text>",
            x2 = W - 10.0,
            tx = LEFT - 4.0,
            ty = yy + 4.0
        );
    }
    for i in 0..BUCKETS {
        let x0 = LEFT + slot * i as f64 + 4.0;
        let label = if i + 1 == BUCKETS {
            format!("{}%+", i * 10)
        } else {
            format!("{}%", i * 10)
        };
        for (k, (counts, class, when)) in [(&b, "before", "before"), (&a, "after", "after")]
            .into_iter()
            .enumerate()
        {
            let c = counts[i];
            let top = y(c);
            let _ = write!(
                svg,
                "<rect x=\"{x:.1}\" y=\"{top:.1}\" width=\"{bar:.1}\" height=\"{h:.1}\" \
                 class=\"{class}\" data-bucket=\"{i}\" data-count=\"{c}\">\
                 <title>{when}: {c} node(s) at {lo}-{hi}% {name}</title></rect>",
                x = x0 + bar * k as f64,
                h = TOP + plot_h - top,
                lo = i * 10,
                hi = (i + 1) * 10,
                name = Esc(r.name()),
            );
        }
        let _ = write!(
            svg,
            "<text x=\"{x:.1}\" y=\"{ly}\" class=\"ax\" text-anchor=\"middle\">{label}</text>",
            x = x0 + bar,
            ly = H - BOTTOM + 16.0
        );
    }
    let ly = H - 8.0;
    let _ = write!(
        svg,
        "<rect x=\"{LEFT}\" y=\"{ry}\" width=\"10\" height=\"10\" class=\"before\"/>\
         <text x=\"{t1}\" y=\"{ly}\" class=\"ax\">before ({nb} nodes)</text>\
         <rect x=\"{r2}\" y=\"{ry}\" width=\"10\" height=\"10\" class=\"after\"/>\
         <text x=\"{t2}\" y=\"{ly}\" class=\"ax\">after ({na} nodes)</text></svg>",
        ry = ly - 9.0,
        t1 = LEFT + 14.0,
        r2 = LEFT + 170.0,
        t2 = LEFT + 184.0,
        nb = before.len(),
        na = after.len(),
    );
    svg
}

/// A horizontal bar `share` (0..=100) wide, for table cells.
pub fn meter(share: f64) -> String {
    format!(
        "<span class=\"meter\"><span style=\"width:{:.1}%\"></span></span>",
        share.clamp(0.0, 100.0)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::simulate::utilization::NodeKind;

    fn node(cpu: i64, alloc: i64) -> NodeUtilization {
        NodeUtilization {
            name: "n".into(),
            kind: NodeKind::Existing,
            node_pool: None,
            instance_type: None,
            pods: 1,
            cpu_requested_millis: cpu,
            cpu_allocatable_millis: alloc,
            memory_requested_bytes: 0,
            memory_allocatable_bytes: 0,
        }
    }

    #[test]
    fn buckets_cover_empty_full_and_overcommitted_nodes() {
        let nodes = [
            node(0, 1000),
            node(99, 1000),
            node(500, 1000),
            node(1000, 1000),
            node(1500, 1000),
            node(1, 0),
        ];
        let h = histogram(&nodes, Resource::Cpu);
        assert_eq!(h, [2, 0, 0, 0, 0, 1, 0, 0, 0, 3]);
        // Memory is all zero: every node in the first bucket.
        assert_eq!(histogram(&nodes, Resource::Memory)[0], nodes.len());
        let svg = utilization_histogram(&nodes, &[], Resource::Cpu);
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>"));
        assert_eq!(svg.matches("class=\"before\" data-bucket").count(), BUCKETS);
    }
}
