//! The runnable index: queued jobs ordered by queue, priority, age and sequence number.
//!
//! Ordering rule: a job's *level* is `3 × queue rank + priority rank` (live=2,
//! default=1, batch=0; high=2, medium=1, low=0), so live/high is 8 and batch/low is 0.
//! Waiting raises the level by one per full `aging_step`, capped at 8. The job with
//! the highest effective level runs first; ties go to the lower sequence number
//! (FIFO). A batch/low job therefore reaches the top level after `8 × aging_step` and
//! then outranks every newer job: it cannot starve.
//!
//! Jobs are bucketed by (level, requirement class). A node asks only the buckets whose
//! class it can run, so a CPU node is never blocked by GPU jobs ahead of it and a pick
//! costs O(levels × classes), not O(queued jobs). An entry is an id, a sequence number
//! and an enqueue time: well under 256 bytes per queued job.

use super::placement::Requirements;
use std::collections::{BTreeMap, HashMap};
use uuid::Uuid;

pub const TOP_LEVEL: u8 = 8;

spelled_enum! {
/// The three queues, highest first; the discriminant is the queue's rank. Spellings are
/// the variants' names in lower case, written once for serde, strum and the database.
#[derive(PartialOrd, Ord, Default)]
pub enum QueueName {
    Live = 2,
    #[default]
    Default = 1,
    Batch = 0,
}
}

impl QueueName {
    /// An API value: empty means the default queue.
    pub fn parse(s: &str) -> Option<Self> {
        if s.is_empty() { Some(QueueName::Default) } else { s.parse().ok() }
    }
    fn rank(self) -> u8 {
        self as u8
    }
}

spelled_enum! {
/// Job priorities, highest first; the discriminant is the rank.
#[derive(PartialOrd, Ord, Default)]
pub enum Priority {
    High = 2,
    #[default]
    Medium = 1,
    Low = 0,
}
}

impl Priority {
    /// An API value: empty means medium.
    pub fn parse(s: &str) -> Option<Self> {
        if s.is_empty() { Some(Priority::Medium) } else { s.parse().ok() }
    }
    fn rank(self) -> u8 {
        self as u8
    }
}

pub fn base_level(q: QueueName, p: Priority) -> u8 {
    q.rank() * 3 + p.rank()
}

/// The effective level after `waited_ms` of waiting.
pub fn effective_level(base: u8, waited_ms: u64, aging_step_ms: u64) -> u8 {
    let bonus = waited_ms.checked_div(aging_step_ms).unwrap_or(0);
    (base as u64 + bonus).min(TOP_LEVEL as u64) as u8
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    id: Uuid,
    enqueued_ms: u64,
}

type ClassId = u32;

/// Where an indexed job sits, kept per id for O(log n) removal.
#[derive(Debug, Clone, Copy)]
struct Slot {
    level: u8,
    class: ClassId,
    seq: u64,
}

/// A queued job as the index reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Picked {
    pub id: Uuid,
    pub seq: u64,
    pub enqueued_ms: u64,
    pub base_level: u8,
    class: ClassId,
}

impl Picked {
    pub fn queue(&self) -> QueueName {
        level_parts(self.base_level).0
    }
    pub fn priority(&self) -> Priority {
        level_parts(self.base_level).1
    }
}

#[derive(Default)]
pub struct RunnableIndex {
    classes: Vec<Requirements>,
    class_ids: HashMap<Requirements, ClassId>,
    buckets: HashMap<(u8, ClassId), BTreeMap<u64, Entry>>,
    slots: HashMap<Uuid, Slot>,
    /// Queued jobs by queue and priority, for the metrics gauges.
    counts: HashMap<(QueueName, Priority), usize>,
}

impl RunnableIndex {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn len(&self) -> usize {
        self.slots.len()
    }

    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    pub fn contains(&self, id: &Uuid) -> bool {
        self.slots.contains_key(id)
    }

    pub fn count(&self, q: QueueName, p: Priority) -> usize {
        self.counts.get(&(q, p)).copied().unwrap_or(0)
    }

    fn class_of(&mut self, req: &Requirements) -> ClassId {
        if let Some(id) = self.class_ids.get(req) {
            return *id;
        }
        let id = self.classes.len() as ClassId;
        self.classes.push(req.clone());
        self.class_ids.insert(req.clone(), id);
        id
    }

    /// Put a picked job back exactly where it was.
    pub fn reinsert(&mut self, p: &Picked) {
        let req = self.classes[p.class as usize].clone();
        self.insert(p.id, p.seq, p.queue(), p.priority(), &req, p.enqueued_ms);
    }

    /// Requirement classes currently present, for "could anyone run this" checks.
    pub fn requirements_of(&self, id: &Uuid) -> Option<&Requirements> {
        self.slots.get(id).map(|s| &self.classes[s.class as usize])
    }

    pub fn insert(&mut self, id: Uuid, seq: u64, q: QueueName, p: Priority, req: &Requirements, enqueued_ms: u64) {
        if self.slots.contains_key(&id) {
            return;
        }
        let level = base_level(q, p);
        let class = self.class_of(req);
        self.buckets.entry((level, class)).or_default().insert(seq, Entry { id, enqueued_ms });
        self.slots.insert(id, Slot { level, class, seq });
        *self.counts.entry((q, p)).or_default() += 1;
    }

    pub fn remove(&mut self, id: &Uuid) -> Option<Picked> {
        let slot = self.slots.remove(id)?;
        let key = (slot.level, slot.class);
        let bucket = self.buckets.get_mut(&key)?;
        let e = bucket.remove(&slot.seq)?;
        if bucket.is_empty() {
            self.buckets.remove(&key);
        }
        let (q, p) = level_parts(slot.level);
        if let Some(c) = self.counts.get_mut(&(q, p)) {
            *c = c.saturating_sub(1);
        }
        Some(Picked { id: e.id, seq: slot.seq, enqueued_ms: e.enqueued_ms, base_level: slot.level, class: slot.class })
    }

    /// The best job whose class `accept` allows, without removing it.
    pub fn best(
        &self,
        now_ms: u64,
        aging_step_ms: u64,
        mut accept: impl FnMut(&Requirements) -> bool,
    ) -> Option<Picked> {
        let mut verdicts: HashMap<ClassId, bool> = HashMap::new();
        let mut best: Option<(u8, u64, Picked)> = None;
        for (&(level, class), bucket) in &self.buckets {
            let ok = *verdicts.entry(class).or_insert_with(|| accept(&self.classes[class as usize]));
            if !ok {
                continue;
            }
            let Some((&seq, e)) = bucket.iter().next() else { continue };
            let eff = effective_level(level, now_ms.saturating_sub(e.enqueued_ms), aging_step_ms);
            let better = match &best {
                None => true,
                Some((bl, bs, _)) => eff > *bl || (eff == *bl && seq < *bs),
            };
            if better {
                best = Some((eff, seq, Picked { id: e.id, seq, enqueued_ms: e.enqueued_ms, base_level: level, class }));
            }
        }
        best.map(|b| b.2)
    }

    /// When the longest-waiting job was enqueued (bucket heads are each bucket's oldest).
    pub fn oldest_enqueued_ms(&self) -> Option<u64> {
        self.buckets.values().filter_map(|b| b.values().next().map(|e| e.enqueued_ms)).min()
    }

    /// Every distinct requirement class with at least one queued job.
    pub fn classes_present(&self) -> Vec<&Requirements> {
        let mut seen: Vec<ClassId> = self.buckets.keys().map(|k| k.1).collect();
        seen.sort_unstable();
        seen.dedup();
        seen.into_iter().map(|c| &self.classes[c as usize]).collect()
    }
}

fn level_parts(level: u8) -> (QueueName, Priority) {
    let q = match level / 3 {
        2 => QueueName::Live,
        1 => QueueName::Default,
        _ => QueueName::Batch,
    };
    let p = match level % 3 {
        2 => Priority::High,
        1 => Priority::Medium,
        _ => Priority::Low,
    };
    (q, p)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gpu() -> Requirements {
        Requirements { encoders: vec!["h264_nvenc"], needs_gpu: true, ..Default::default() }
    }
    fn cpu() -> Requirements {
        Requirements { encoders: vec!["libx264"], ..Default::default() }
    }

    fn drain(ix: &mut RunnableIndex, now: u64, step: u64) -> Vec<u64> {
        let mut out = vec![];
        while let Some(p) = ix.best(now, step, |_| true) {
            ix.remove(&p.id);
            out.push(p.seq);
        }
        out
    }

    #[test]
    fn queue_then_priority_then_fifo() {
        let mut ix = RunnableIndex::new();
        let rows = [
            (1, QueueName::Batch, Priority::High),
            (2, QueueName::Default, Priority::Low),
            (3, QueueName::Live, Priority::Low),
            (4, QueueName::Default, Priority::High),
            (5, QueueName::Live, Priority::High),
            (6, QueueName::Default, Priority::High),
            (7, QueueName::Default, Priority::Medium),
        ];
        for (seq, q, p) in rows {
            ix.insert(Uuid::new_v4(), seq, q, p, &cpu(), 0);
        }
        assert_eq!(drain(&mut ix, 0, 60_000), vec![5, 3, 4, 6, 7, 2, 1]);
    }

    #[test]
    fn aging_lifts_old_batch_low_to_the_top() {
        let mut ix = RunnableIndex::new();
        ix.insert(Uuid::new_v4(), 1, QueueName::Batch, Priority::Low, &cpu(), 0);
        // A live/high job submitted much later.
        ix.insert(Uuid::new_v4(), 2, QueueName::Live, Priority::High, &cpu(), 500_000);
        // Not old enough yet: 7 steps → level 7 < 8.
        assert_eq!(ix.best(420_000, 60_000, |_| true).unwrap().seq, 2);
        // 8 steps → level 8, and it is older (lower seq): it goes first.
        assert_eq!(ix.best(480_000, 60_000, |_| true).unwrap().seq, 1);
        // With aging off it would wait behind every higher-level job.
        assert_eq!(ix.best(10_000_000, 0, |_| true).unwrap().seq, 2);
    }

    #[test]
    fn effective_level_table() {
        for (base, waited, step, want) in
            [(0, 0, 60, 0), (0, 59, 60, 0), (0, 60, 60, 1), (5, 600, 60, 8), (8, 0, 60, 8), (3, 1000, 0, 3)]
        {
            assert_eq!(effective_level(base, waited, step), want);
        }
    }

    #[test]
    fn no_head_of_line_blocking() {
        let mut ix = RunnableIndex::new();
        for seq in 1..=1000 {
            ix.insert(Uuid::new_v4(), seq, QueueName::Live, Priority::High, &gpu(), 0);
        }
        ix.insert(Uuid::new_v4(), 1001, QueueName::Batch, Priority::Low, &cpu(), 0);
        let cpu_node_pick = ix.best(0, 60_000, |r| !r.needs_gpu).unwrap();
        assert_eq!(cpu_node_pick.seq, 1001);
        assert_eq!(ix.best(0, 60_000, |r| r.needs_gpu).unwrap().seq, 1);
        assert!(ix.best(0, 60_000, |_| false).is_none());
    }

    #[test]
    fn remove_and_counts() {
        let mut ix = RunnableIndex::new();
        let a = Uuid::new_v4();
        ix.insert(a, 1, QueueName::Live, Priority::Low, &cpu(), 0);
        ix.insert(a, 1, QueueName::Live, Priority::Low, &cpu(), 0);
        assert_eq!(ix.len(), 1);
        assert_eq!(ix.count(QueueName::Live, Priority::Low), 1);
        assert!(ix.remove(&a).is_some());
        assert!(ix.remove(&a).is_none());
        assert_eq!(ix.count(QueueName::Live, Priority::Low), 0);
        assert!(ix.is_empty());
    }
}
