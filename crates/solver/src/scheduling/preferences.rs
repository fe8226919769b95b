//! Preference relaxation (upstream `preferences.go`): preferences are treated as hard first and
//! dropped one step at a time, in upstream order, when a pod cannot be placed.

use crate::requirements::Requirements;
use crate::taints::{TaintEffect, Toleration, TolerationOperator};

use super::prepare::PodInfo;
use super::topology::PodTopo;

/// The constraints of one placement attempt.
#[derive(Debug, Clone)]
pub(crate) struct Attempt {
    term: usize,
    pref_node: usize,
    pub spread: Vec<usize>,
    pub affinity: Vec<usize>,
    pub anti: Vec<usize>,
    /// Required anti-affinity groups (owned by the pod once placed).
    pub owned: Vec<usize>,
    soft_spread: Vec<usize>,
    pref_aff: Vec<usize>,
    pref_anti: Vec<usize>,
    pub tolerate_prefer_no_schedule: bool,
    /// Node requirements including the active preferred term.
    pub reqs: Requirements,
    /// Node requirements without preferences (spread eligibility, reasons).
    pub strict: Requirements,
}

impl Attempt {
    /// Everything active.
    pub fn new(pod: &PodInfo, topo: &PodTopo) -> Self {
        let mut a = Attempt {
            term: 0,
            pref_node: 0,
            spread: topo
                .spread
                .iter()
                .filter(|(_, h)| *h)
                .map(|(g, _)| *g)
                .collect(),
            affinity: topo
                .affinity
                .iter()
                .filter(|(_, w)| w.is_none())
                .map(|(g, _)| *g)
                .collect(),
            anti: topo
                .anti
                .iter()
                .filter(|(_, w)| w.is_none())
                .map(|(g, _)| *g)
                .collect(),
            owned: topo
                .anti
                .iter()
                .filter(|(_, w)| w.is_none())
                .map(|(g, _)| *g)
                .collect(),
            soft_spread: topo
                .spread
                .iter()
                .filter(|(_, h)| !*h)
                .map(|(g, _)| *g)
                .collect(),
            pref_aff: topo
                .affinity
                .iter()
                .filter(|(_, w)| w.is_some())
                .map(|(g, _)| *g)
                .collect(),
            pref_anti: topo
                .anti
                .iter()
                .filter(|(_, w)| w.is_some())
                .map(|(g, _)| *g)
                .collect(),
            tolerate_prefer_no_schedule: false,
            reqs: Requirements::new(),
            strict: Requirements::new(),
        };
        a.rebuild(pod);
        a
    }

    /// Everything relaxed that can be (used for reasons: the most permissive attempt).
    pub fn fully_relaxed(pod: &PodInfo, topo: &PodTopo, any_prefer: bool) -> Self {
        let mut a = Self::new(pod, topo);
        while a.relax(pod, any_prefer) {}
        a
    }

    fn rebuild(&mut self, pod: &PodInfo) {
        self.strict = pod
            .terms
            .get(self.term)
            .cloned()
            .unwrap_or_else(|| pod.base.clone());
        self.reqs = match pod.preferred.get(self.pref_node) {
            Some(p) => self.strict.intersect(p),
            None => self.strict.clone(),
        };
    }

    /// Active spread groups: hard ones plus the soft ones not yet relaxed.
    pub fn all_spread(&self) -> Vec<usize> {
        let mut v = self.spread.clone();
        v.extend(&self.soft_spread);
        v
    }

    /// Active affinity groups.
    pub fn all_affinity(&self) -> Vec<usize> {
        let mut v = self.affinity.clone();
        v.extend(&self.pref_aff);
        v
    }

    /// Active anti-affinity groups.
    pub fn all_anti(&self) -> Vec<usize> {
        let mut v = self.anti.clone();
        v.extend(&self.pref_anti);
        v
    }

    /// Extra tolerations from relaxation.
    pub fn extra_tolerations(&self) -> Option<Toleration> {
        self.tolerate_prefer_no_schedule.then(|| Toleration {
            key: String::new(),
            operator: TolerationOperator::Exists,
            value: String::new(),
            effect: Some(TaintEffect::PreferNoSchedule),
        })
    }

    /// One relaxation step; false when nothing is left to relax.
    pub fn relax(&mut self, pod: &PodInfo, any_prefer_no_schedule: bool) -> bool {
        if pod.terms.len() > self.term + 1 {
            self.term += 1;
        } else if !self.pref_aff.is_empty() {
            self.pref_aff.remove(0);
        } else if !self.pref_anti.is_empty() {
            self.pref_anti.remove(0);
        } else if self.pref_node < pod.preferred.len() {
            self.pref_node += 1;
        } else if !self.soft_spread.is_empty() {
            self.soft_spread.remove(0);
        } else if any_prefer_no_schedule && !self.tolerate_prefer_no_schedule {
            self.tolerate_prefer_no_schedule = true;
        } else {
            return false;
        }
        self.rebuild(pod);
        true
    }
}
