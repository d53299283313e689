//! Sizing of the lab pods to the registered card (pure).
//!
//! - The two share pods get a *slice*: 8000 MiB by default, smaller on small cards
//!   (`devmem / 6` rounded down to 1000 MiB), or what the user asks.
//! - The oversubscribe pod must fit an *empty* card but not the memory left *beside the two
//!   slices*: `devmem − 2·slice < over ≤ devmem`. On a node with several GPUs it must also not fit
//!   any other candidate card, so when the GPU UUIDs are known the lab pins all three pods to one
//!   card (`nvidia.com/use-gpuuuid`) and only that card is a candidate.

use serde::Serialize;

/// Slice of each share pod when the card is big enough.
pub const DEFAULT_SLICE_MIB: u64 = 8000;
/// Slices are rounded down to this on small cards.
pub const ROUND_MIB: u64 = 1000;
/// A card smaller than `DEFAULT_SLICE_MIB × SMALL_CARD_DIVISOR` gets `devmem / 6`.
pub const SMALL_CARD_DIVISOR: u64 = 6;

/// A card the pods may land on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Card {
    /// GPU UUID when known (unknown for `--card-mib` dry runs).
    pub uuid: Option<String>,
    pub devmem_mib: u64,
}

/// What the lab pods ask for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Sizing {
    /// The card the two slices go to.
    pub card: Card,
    pub slice_mib: u64,
    pub oversubscribe_mib: u64,
    /// UUID all lab pods are pinned to (several GPUs with known UUIDs), else `None`.
    pub pin_uuid: Option<String>,
}

/// Why a sizing is impossible.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SizingError {
    #[error("no GPU to size for: the node has no registered card (run `cluster-ctl doctor`)")]
    NoCard,
    #[error(
        "the card has {devmem_mib} MiB, too small for the lab's default slices (devmem/6 rounds down to 0); pass --slice-mib with at most {} MiB",
        devmem_mib / 2
    )]
    CardTooSmall { devmem_mib: u64 },
    #[error("--slice-mib must be at least 1 MiB")]
    ZeroSlice,
    #[error(
        "two slices of {slice_mib} MiB do not fit together on the {devmem_mib} MiB card; pass --slice-mib of at most {} MiB",
        devmem_mib / 2
    )]
    SlicesDoNotFit { slice_mib: u64, devmem_mib: u64 },
    #[error(
        "--oversubscribe-mib {over_mib} does not fit even an empty {devmem_mib} MiB card, so the scheduler would refuse it for the wrong reason; use a value in {}..={devmem_mib}",
        low_exclusive + 1
    )]
    OverTooBig {
        over_mib: u64,
        devmem_mib: u64,
        low_exclusive: u64,
    },
    #[error(
        "--oversubscribe-mib {over_mib} still fits beside the two {slice_mib} MiB slices ({free_mib} MiB free on card {card}), so it would be scheduled; use a value in {}..={devmem_mib}",
        free_mib + 1
    )]
    OverFitsBesideSlices {
        over_mib: u64,
        slice_mib: u64,
        free_mib: u64,
        devmem_mib: u64,
        card: String,
    },
    #[error(
        "the oversubscribe pod ({over_mib} MiB) would fit on the empty GPU {card} ({devmem_mib} MiB) of this multi-GPU node instead of being refused; the lab pins its pods to one GPU when the UUIDs are registered — register the node (HAMi device plugin) so the UUIDs are known"
    )]
    FitsOtherCard {
        over_mib: u64,
        card: String,
        devmem_mib: u64,
    },
}

/// The default slice for a card of `devmem_mib`.
pub fn default_slice(devmem_mib: u64) -> Result<u64, SizingError> {
    let sixth = devmem_mib / SMALL_CARD_DIVISOR / ROUND_MIB * ROUND_MIB;
    let slice = DEFAULT_SLICE_MIB.min(sixth);
    if slice == 0 {
        return Err(SizingError::CardTooSmall { devmem_mib });
    }
    Ok(slice)
}

/// Sizes the lab pods for a node's cards (in register order). The target card is the first healthy
/// one the caller passes first; with several cards whose UUIDs are known, the pods are pinned to it.
pub fn size(
    cards: &[Card],
    slice_override: Option<u64>,
    over_override: Option<u64>,
) -> Result<Sizing, SizingError> {
    let target = cards.first().ok_or(SizingError::NoCard)?;
    let devmem = target.devmem_mib;
    let slice = match slice_override {
        Some(0) => return Err(SizingError::ZeroSlice),
        Some(s) => s,
        None => default_slice(devmem)?,
    };
    let two = slice.saturating_mul(2);
    if two > devmem {
        return Err(SizingError::SlicesDoNotFit {
            slice_mib: slice,
            devmem_mib: devmem,
        });
    }
    let low_exclusive = devmem - two;
    let over = match over_override {
        Some(o) => o,
        None => {
            // devmem − slice, rounded down to 1000 MiB when that still clears the slices.
            let exact = devmem - slice;
            let rounded = exact / ROUND_MIB * ROUND_MIB;
            if rounded > low_exclusive {
                rounded
            } else {
                exact
            }
        }
    };
    if over > devmem {
        return Err(SizingError::OverTooBig {
            over_mib: over,
            devmem_mib: devmem,
            low_exclusive,
        });
    }
    let card_name = |c: &Card| c.uuid.clone().unwrap_or_else(|| "0".to_owned());
    if over <= low_exclusive {
        return Err(SizingError::OverFitsBesideSlices {
            over_mib: over,
            slice_mib: slice,
            free_mib: low_exclusive,
            devmem_mib: devmem,
            card: card_name(target),
        });
    }
    let pin_uuid = if cards.len() > 1 {
        target.uuid.clone()
    } else {
        None
    };
    if pin_uuid.is_none() {
        // Unpinned: every other card is a candidate and is empty.
        if let Some(other) = cards.iter().skip(1).find(|c| c.devmem_mib >= over) {
            return Err(SizingError::FitsOtherCard {
                over_mib: over,
                card: card_name(other),
                devmem_mib: other.devmem_mib,
            });
        }
    }
    Ok(Sizing {
        card: target.clone(),
        slice_mib: slice,
        oversubscribe_mib: over,
        pin_uuid,
    })
}

/// The cards of a node from its parsed register annotation: healthy cards first, register order kept.
pub fn cards_from_gpus(gpus: &[crate::register::Gpu]) -> Vec<Card> {
    let mut cards: Vec<(bool, Card)> = gpus
        .iter()
        .map(|g| {
            (
                g.health,
                Card {
                    uuid: Some(g.uuid.clone()),
                    devmem_mib: g.devmem_mib,
                },
            )
        })
        .collect();
    cards.sort_by_key(|(healthy, _)| !*healthy);
    cards.into_iter().map(|(_, c)| c).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::register::parse_register;
    use crate::testdata::{fixture_node, register_of};
    use proptest::prelude::*;

    fn card(mib: u64) -> Card {
        Card {
            uuid: None,
            devmem_mib: mib,
        }
    }

    fn fixture_cards(name: &str) -> Vec<Card> {
        let (_, gpus) = parse_register(&register_of(&fixture_node(name))).unwrap();
        cards_from_gpus(&gpus)
    }

    #[test]
    fn a6000_card_of_the_issue() {
        let s = size(&[card(49140)], None, None).unwrap();
        assert_eq!(s.slice_mib, 8000);
        assert!(
            s.oversubscribe_mib > 33140 && s.oversubscribe_mib <= 49140,
            "{s:?}"
        );
        assert_eq!(s.oversubscribe_mib, 41000);
        assert_eq!(s.pin_uuid, None);
    }

    #[test]
    fn h100_fixture() {
        let s = size(&fixture_cards("node-hami-v2.10-h100.json"), None, None).unwrap();
        assert_eq!(s.slice_mib, 8000);
        assert_eq!(s.oversubscribe_mib, 73000);
        assert!(s.oversubscribe_mib > 81559 - 16000);
    }

    #[test]
    fn small_cards_get_a_sixth_rounded_down() {
        assert_eq!(
            size(&fixture_cards("node-hami-v2.6-l4-legacy9.json"), None, None)
                .unwrap()
                .slice_mib,
            3000
        );
        assert_eq!(
            size(
                &fixture_cards("node-hami-v2.4-v100-legacy7.json"),
                None,
                None
            )
            .unwrap()
            .slice_mib,
            5000
        );
        assert_eq!(default_slice(48000).unwrap(), 8000);
        assert_eq!(default_slice(47999).unwrap(), 7000);
        assert_eq!(
            default_slice(5999),
            Err(SizingError::CardTooSmall { devmem_mib: 5999 })
        );
    }

    #[test]
    fn overrides_are_validated() {
        let s = size(&[card(49140)], Some(10000), Some(30000)).unwrap();
        assert_eq!((s.slice_mib, s.oversubscribe_mib), (10000, 30000));
        assert!(matches!(
            size(&[card(49140)], None, Some(33140)),
            Err(SizingError::OverFitsBesideSlices {
                free_mib: 33140,
                ..
            })
        ));
        assert!(size(&[card(49140)], None, Some(33141)).is_ok());
        assert!(size(&[card(49140)], None, Some(49140)).is_ok());
        assert!(matches!(
            size(&[card(49140)], None, Some(49141)),
            Err(SizingError::OverTooBig { .. })
        ));
        assert!(matches!(
            size(&[card(49140)], Some(30000), None),
            Err(SizingError::SlicesDoNotFit { .. })
        ));
        assert_eq!(
            size(&[card(49140)], Some(0), None),
            Err(SizingError::ZeroSlice)
        );
        assert_eq!(size(&[], None, None), Err(SizingError::NoCard));
        let text = size(&[card(49140)], None, Some(20000))
            .unwrap_err()
            .to_string();
        assert!(text.contains("33141..=49140"), "{text}");
    }

    #[test]
    fn multi_gpu_with_uuids_pins_to_the_first_card() {
        let cards = crate::testdata::two_cards(49140);
        let s = size(&cards, None, None).unwrap();
        assert_eq!(s.pin_uuid.as_deref(), Some("GPU-a"));
    }

    #[test]
    fn multi_gpu_without_uuids_refuses_when_another_card_would_take_it() {
        let err = size(&[card(49140), card(49140)], None, None).unwrap_err();
        assert!(matches!(err, SizingError::FitsOtherCard { .. }), "{err}");
        // A smaller second card that cannot hold it is fine.
        assert!(size(&[card(49140), card(24000)], None, None).is_ok());
    }

    #[test]
    fn unhealthy_cards_go_last() {
        let gpus = parse_register(
            "GPU-a,10,1000,100,T,0,false,0,hami-core:GPU-b,10,49140,100,T,0,true,1,hami-core:",
        )
        .unwrap()
        .1;
        assert_eq!(cards_from_gpus(&gpus)[0].uuid.as_deref(), Some("GPU-b"));
    }

    proptest! {
        #[test]
        fn default_sizing_always_satisfies_the_invariant(devmem in 0u64..2_000_000) {
            if let Ok(s) = size(&[card(devmem)], None, None) {
                prop_assert!(2 * s.slice_mib <= devmem);
                prop_assert!(s.oversubscribe_mib <= devmem);
                prop_assert!(s.oversubscribe_mib > devmem - 2 * s.slice_mib);
                prop_assert!(s.slice_mib <= DEFAULT_SLICE_MIB);
            } else {
                prop_assert!(devmem < 6000);
            }
        }
    }
}
