//! What readers get from the registry, from memory: the node list and summaries, one
//! node, counts per state, names, and the RTMP destinations workers advertise.

use super::*;

impl Handler<ListNodes> for NodeSupervisor {
    type Result = MessageResult<ListNodes>;
    fn handle(&mut self, _: ListNodes, _: &mut Context<Self>) -> Self::Result {
        let mut v: Vec<Node> = self.nodes.values().map(|n| n.to_wire()).collect();
        v.sort_by(|a, b| a.registered_at.cmp(&b.registered_at).then(a.id.cmp(&b.id)));
        MessageResult(v)
    }
}

impl Handler<ListNodeSummaries> for NodeSupervisor {
    type Result = MessageResult<ListNodeSummaries>;
    fn handle(&mut self, _: ListNodeSummaries, _: &mut Context<Self>) -> Self::Result {
        let mut v: Vec<(i64, crate::wire::NodeStatus)> = self
            .nodes
            .values()
            .map(|n| {
                let s = crate::wire::NodeStatus {
                    node_id: n.row.id.clone(),
                    name: n.row.name.clone(),
                    node_status: n.status(),
                    running_jobs: n.running_sorted(),
                    max_concurrent_jobs: n.row.max_concurrent_jobs.max(1) as u32,
                    cpu_load_percent: n.row.cpu_load_percent,
                    last_heartbeat: rfc3339(n.row.last_heartbeat),
                };
                (n.row.registered_at, s)
            })
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0).then(a.1.node_id.cmp(&b.1.node_id)));
        MessageResult(v.into_iter().map(|(_, s)| s).collect())
    }
}

impl Handler<GetNodeCounts> for NodeSupervisor {
    type Result = MessageResult<GetNodeCounts>;
    fn handle(&mut self, _: GetNodeCounts, _: &mut Context<Self>) -> Self::Result {
        MessageResult(self.counts)
    }
}

impl Handler<GetNodeNames> for NodeSupervisor {
    type Result = MessageResult<GetNodeNames>;
    fn handle(&mut self, GetNodeNames(ids): GetNodeNames, _: &mut Context<Self>) -> Self::Result {
        MessageResult(ids.into_iter().filter_map(|id| self.nodes.get(&id).map(|n| (id, n.row.name.clone()))).collect())
    }
}

impl Handler<ListRtmpDestinations> for NodeSupervisor {
    type Result = MessageResult<ListRtmpDestinations>;
    fn handle(&mut self, _: ListRtmpDestinations, _: &mut Context<Self>) -> Self::Result {
        let mut v: Vec<(String, u16)> = self
            .nodes
            .values()
            .filter_map(|n| n.hw.rtmp_base.as_deref().and_then(crate::domain::allow::rtmp_destination))
            .collect();
        v.sort();
        v.dedup();
        MessageResult(v)
    }
}

impl Handler<GetNode> for NodeSupervisor {
    type Result = Option<Node>;
    fn handle(&mut self, m: GetNode, _: &mut Context<Self>) -> Self::Result {
        self.nodes.get(&m.0).map(|n| n.to_wire())
    }
}
