//! Which cards the fleet has, from the node list and the pod list (pure): every node HAMi
//! registered (`hami.io/node-nvidia-register`, any of its formats — `crate::register`), or the
//! nodes `--nodes` names; per card its slice, and whether it can be probed now. A node that is
//! NotReady or cordoned, a card with less free than the slice (what HAMi's allocation annotations
//! of the live pods book on it), and a registration that cannot be read are `NotChecked` at once
//! with their reason; every other card becomes a [`CardTask`].

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Node, Pod};
use lab_report::fleet::{FleetCard, FleetNode, NotChecked, default_slice_mib};

use super::{ROLE_LABEL, ROLE_VALUE, not_checked};
use crate::decide::image_tag;
use crate::register::{REGISTER_ANNOTATION, RegisterFormat, parse_register};

/// The label kube-scheduler matches a probe pod's `nodeSelector` against.
pub const HOSTNAME_LABEL: &str = "kubernetes.io/hostname";

/// One card to probe.
#[derive(Debug, Clone, PartialEq)]
pub struct CardTask {
    /// Position of the node in [`Discovery::nodes`] and of the card in its `cards`.
    pub node_index: usize,
    pub card_index: usize,
    pub node: String,
    /// The node's `kubernetes.io/hostname` label (the node's name when it has none).
    pub hostname: String,
    /// The card as it will be reported, outcome still to be decided.
    pub card: FleetCard,
}

/// The fleet before any probe ran.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Discovery {
    pub nodes: Vec<FleetNode>,
    pub tasks: Vec<CardTask>,
}

fn node_ready(node: &Node) -> bool {
    node.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .into_iter()
        .flatten()
        .any(|c| c.type_ == "Ready" && c.status == "True")
}

fn is_fleet_probe(pod: &Pod) -> bool {
    pod.metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(ROLE_LABEL))
        .is_some_and(|v| v == ROLE_VALUE)
}

/// MiB booked per card UUID by live pods (not Succeeded or Failed), from HAMi's
/// `hami.io/vgpu-devices-allocated`. Fleet's own probe pods do not count (the sweep removes them).
pub fn booked_mib(pods: &[Pod]) -> BTreeMap<String, u64> {
    let mut booked = BTreeMap::new();
    for pod in pods {
        let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
        if matches!(phase, Some("Succeeded" | "Failed")) || is_fleet_probe(pod) {
            continue;
        }
        let Some(value) = pod
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(lab_report::k8s::ALLOCATED_ANNOTATION))
        else {
            continue;
        };
        // An annotation that does not parse books nothing we could name; the scheduler will
        // answer for that card (unschedulable) if it is really full.
        for device in lab_report::k8s::parse_allocated(value)
            .unwrap_or_default()
            .into_iter()
            .flatten()
        {
            *booked.entry(device.uuid).or_insert(0) += device.mem_mib;
        }
    }
    booked
}

/// HAMi's version on each node: the tag of the device plugin's image in HAMi's pod there.
fn hami_versions(pods: &[Pod]) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for pod in pods {
        let is_plugin = pod
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get("app.kubernetes.io/component"))
            .is_some_and(|c| c == "hami-device-plugin");
        let Some(spec) = pod.spec.as_ref().filter(|_| is_plugin) else {
            continue;
        };
        let (Some(node), Some(image)) = (
            spec.node_name.as_ref(),
            spec.containers
                .iter()
                .find(|c| c.name == "device-plugin")
                .or(spec.containers.first())
                .and_then(|c| c.image.as_deref()),
        ) else {
            continue;
        };
        if let Some(tag) = image_tag(image) {
            out.insert(node.clone(), tag.to_owned());
        }
    }
    out
}

fn format_name(f: RegisterFormat) -> &'static str {
    match f {
        RegisterFormat::Legacy7 => "legacy-7",
        RegisterFormat::Legacy9 => "legacy-9",
        RegisterFormat::Json => "json",
    }
}

/// The fleet: `nodes` as listed (already narrowed by `--node-selector`), `wanted` the names of
/// `--nodes` (empty: every node HAMi registered), `slice` the `--slice-mib`. Nodes in `wanted`
/// that the list lacks are returned as the error.
pub fn discover(
    nodes: &[Node],
    pods: &[Pod],
    wanted: &[String],
    slice: Option<u64>,
) -> Result<Discovery, Vec<String>> {
    let missing: Vec<String> = wanted
        .iter()
        .filter(|w| {
            !nodes
                .iter()
                .any(|n| n.metadata.name.as_deref() == Some(w.as_str()))
        })
        .cloned()
        .collect();
    if !missing.is_empty() {
        return Err(missing);
    }
    let booked = booked_mib(pods);
    let versions = hami_versions(pods);
    let mut d = Discovery::default();
    let mut sorted: Vec<&Node> = nodes.iter().collect();
    sorted.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    for node in sorted {
        let name = node.metadata.name.clone().unwrap_or_default();
        let annotation = node
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(REGISTER_ANNOTATION));
        let named = wanted.contains(&name);
        if !named && (!wanted.is_empty() || annotation.is_none()) {
            continue; // not asked for, or not a node HAMi registered
        }
        let hostname = node
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(HOSTNAME_LABEL))
            .cloned()
            .unwrap_or_else(|| name.clone());
        let mut fleet_node = FleetNode {
            name: name.clone(),
            ready: node_ready(node),
            cordoned: node
                .spec
                .as_ref()
                .and_then(|s| s.unschedulable)
                .unwrap_or(false),
            hami_version: versions.get(&name).cloned(),
            ..FleetNode::default()
        };
        let node_index = d.nodes.len();
        let parsed = match annotation {
            None => Err(format!(
                "no {REGISTER_ANNOTATION} annotation: HAMi's device plugin has not registered this node's cards (check its hami-device-plugin pod)"
            )),
            Some(v) => parse_register(v).map_err(|e| e.to_string()),
        };
        let gpus = match parsed {
            Ok((format, gpus)) => {
                fleet_node.register_format = Some(format_name(format).to_owned());
                gpus
            }
            Err(why) => {
                // The node's cards are unknown: one entry stands for them, so the run cannot pass.
                fleet_node.cards.push(not_checked(
                    FleetCard {
                        uuid: "unknown".into(),
                        ..FleetCard::default()
                    },
                    NotChecked::AnnotationUnreadable,
                    format!("the registration cannot be read: {why}"),
                ));
                fleet_node.register_error = Some(why);
                d.nodes.push(fleet_node);
                continue;
            }
        };
        for (position, gpu) in gpus.iter().enumerate() {
            let slice_mib = slice.unwrap_or_else(|| default_slice_mib(gpu.devmem_mib));
            let card = FleetCard {
                uuid: gpu.uuid.clone(),
                index: gpu
                    .index
                    .unwrap_or_else(|| u32::try_from(position).unwrap_or(u32::MAX)),
                model: gpu.gpu_type.clone(),
                memory_mib: gpu.devmem_mib,
                slice_mib,
                ..FleetCard::default()
            };
            let free = gpu
                .devmem_mib
                .saturating_sub(booked.get(&gpu.uuid).copied().unwrap_or(0));
            let card = if !fleet_node.ready {
                not_checked(
                    card,
                    NotChecked::NodeNotReady,
                    "the node's Ready condition is not True".into(),
                )
            } else if fleet_node.cordoned {
                not_checked(
                    card,
                    NotChecked::NodeCordoned,
                    "the node is cordoned (spec.unschedulable): no pod may be placed there".into(),
                )
            } else if free < slice_mib {
                not_checked(
                    card,
                    NotChecked::CardBusy { free_mib: free },
                    format!(
                        "{free} MiB free of {} MiB (HAMi's allocations of the pods on it), less than the {slice_mib} MiB slice",
                        gpu.devmem_mib
                    ),
                )
            } else {
                d.tasks.push(CardTask {
                    node_index,
                    card_index: fleet_node.cards.len(),
                    node: name.clone(),
                    hostname: hostname.clone(),
                    card: card.clone(),
                });
                card
            };
            fleet_node.cards.push(card);
        }
        d.nodes.push(fleet_node);
    }
    d.tasks = across_nodes(d.tasks);
    Ok(d)
}

/// `tasks` in turns across the nodes: every node's first card, then every node's second, ….
/// hami-scheduler binds one pod per node at a time (its node lock, held from Bind to the device
/// plugin's Allocate; a Bind meanwhile fails and kube-scheduler retries it after a backoff of 1
/// to 10 s), so the pods in flight are best spread over as many nodes as there are.
pub fn across_nodes(tasks: Vec<CardTask>) -> Vec<CardTask> {
    let mut turns: Vec<Vec<CardTask>> = Vec::new();
    let mut turn_of_node: std::collections::HashMap<usize, usize> = Default::default();
    for t in tasks {
        let turn = turn_of_node.entry(t.node_index).or_insert(0);
        if turns.len() <= *turn {
            turns.push(Vec::new());
        }
        turns[*turn].push(t);
        *turn += 1;
    }
    turns.into_iter().flatten().collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testdata::{fixture_node, fixture_pod};
    use lab_report::fleet::CardOutcome;

    #[test]
    fn cards_are_probed_in_turns_across_the_nodes() {
        let task = |node_index: usize, card_index: usize| CardTask {
            node_index,
            card_index,
            node: format!("n{node_index}"),
            hostname: format!("n{node_index}"),
            card: FleetCard::default(),
        };
        // Node 0 with three cards, node 1 with one, node 2 with two, as discovery lists them.
        let listed = vec![
            task(0, 0),
            task(0, 1),
            task(0, 2),
            task(1, 0),
            task(2, 0),
            task(2, 1),
        ];
        let order: Vec<(usize, usize)> = across_nodes(listed)
            .iter()
            .map(|t| (t.node_index, t.card_index))
            .collect();
        assert_eq!(order, [(0, 0), (1, 0), (2, 0), (0, 1), (2, 1), (0, 2)]);
        assert!(across_nodes(Vec::new()).is_empty());
    }

    #[test]
    fn every_register_format_gives_its_cards() {
        let nodes: Vec<Node> = [
            "node-hami-v2.10-h100.json",
            "node-hami-v2.4-v100-legacy7.json",
            "node-hami-v2.6-l4-legacy9.json",
            "node-hami-v2.9-a6000.json",
        ]
        .iter()
        .enumerate()
        .map(|(i, f)| {
            let mut n = fixture_node(f);
            n.metadata.name = Some(format!("n{i}"));
            n
        })
        .collect();
        let d = discover(&nodes, &[], &[], None).unwrap();
        assert_eq!(d.nodes.len(), 4);
        let formats: Vec<_> = d
            .nodes
            .iter()
            .map(|n| n.register_format.clone().unwrap())
            .collect();
        assert!(
            formats.contains(&"json".to_owned())
                && formats.contains(&"legacy-7".to_owned())
                && formats.contains(&"legacy-9".to_owned()),
            "{formats:?}"
        );
        for n in &d.nodes {
            assert!(!n.cards.is_empty());
            for c in &n.cards {
                assert_eq!(c.slice_mib, default_slice_mib(c.memory_mib));
            }
        }
        assert_eq!(
            d.tasks.len(),
            d.nodes.iter().map(|n| n.cards.len()).sum::<usize>()
        );
        // Tasks point at their card.
        for t in &d.tasks {
            assert_eq!(d.nodes[t.node_index].cards[t.card_index].uuid, t.card.uuid);
        }
    }

    #[test]
    fn unready_cordoned_busy_and_unreadable_are_not_checked_with_their_reason() {
        let base = fixture_node("node-hami-v2.10-h100.json");
        let mut notready = base.clone();
        notready.metadata.name = Some("a-notready".into());
        for c in notready
            .status
            .as_mut()
            .unwrap()
            .conditions
            .as_mut()
            .unwrap()
        {
            if c.type_ == "Ready" {
                c.status = "Unknown".into();
            }
        }
        let mut cordoned = base.clone();
        cordoned.metadata.name = Some("b-cordoned".into());
        cordoned.spec.get_or_insert_default().unschedulable = Some(true);
        let mut broken = base.clone();
        broken.metadata.name = Some("c-broken".into());
        broken
            .metadata
            .annotations
            .as_mut()
            .unwrap()
            .insert(REGISTER_ANNOTATION.into(), "GPU-1,10,81559:".into());
        let mut busy = base.clone();
        busy.metadata.name = Some("d-busy".into());
        // The constructed share pods book 2 × 8000 MiB... on the fixture's H100.
        let tenants: Vec<Pod> = [
            "pod-hami-share-a-running.json",
            "pod-hami-share-b-running.json",
        ]
        .iter()
        .map(|f| fixture_pod(f))
        .collect();
        let d = discover(
            &[notready, cordoned, broken, busy],
            &tenants,
            &[],
            Some(70_000),
        )
        .unwrap();
        let reasons: Vec<(String, Option<NotChecked>)> = d
            .nodes
            .iter()
            .map(|n| (n.name.clone(), n.cards[0].not_checked.clone()))
            .collect();
        assert_eq!(reasons[0].1, Some(NotChecked::NodeNotReady));
        assert_eq!(reasons[1].1, Some(NotChecked::NodeCordoned));
        assert_eq!(reasons[2].1, Some(NotChecked::AnnotationUnreadable));
        assert!(
            d.nodes[2]
                .register_error
                .as_deref()
                .unwrap()
                .contains("fields")
        );
        let booked = booked_mib(&tenants);
        let on_h100: u64 = booked.values().sum();
        assert!(on_h100 > 0);
        assert_eq!(
            reasons[3].1,
            Some(NotChecked::CardBusy {
                free_mib: 81559 - on_h100
            })
        );
        assert!(d.tasks.is_empty());
        assert!(
            d.nodes
                .iter()
                .flat_map(|n| &n.cards)
                .all(|c| c.outcome == CardOutcome::NotChecked)
        );
        // The same busy card with a slice that fits is probed.
        let d = discover(
            &[fixture_node("node-hami-v2.10-h100.json")],
            &tenants,
            &[],
            Some(8000),
        )
        .unwrap();
        assert_eq!(d.tasks.len(), 1);
    }

    #[test]
    fn nodes_names_only_those_and_a_missing_name_is_refused() {
        let n = fixture_node("node-hami-v2.10-h100.json");
        let name = n.metadata.name.clone().unwrap();
        let d = discover(
            std::slice::from_ref(&n),
            &[],
            std::slice::from_ref(&name),
            None,
        )
        .unwrap();
        assert_eq!(d.nodes.len(), 1);
        let err = discover(&[n], &[], &["nope".to_owned()], None).unwrap_err();
        assert_eq!(err, vec!["nope".to_owned()]);
        // A node without the annotation is skipped unless named.
        let plain = fixture_node("node-unlabelled.json");
        assert!(
            discover(std::slice::from_ref(&plain), &[], &[], None)
                .unwrap()
                .nodes
                .is_empty()
        );
        let pname = plain.metadata.name.clone().unwrap();
        let d = discover(&[plain], &[], &[pname], None).unwrap();
        assert_eq!(
            d.nodes[0].cards[0].not_checked,
            Some(NotChecked::AnnotationUnreadable)
        );
    }
}
