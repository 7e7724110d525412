//! Every answer a requester gets is held to the idempotency-key contract as it arrives, so a
//! replay that applied twice, or a replay of a key nobody used, fails the run even where the
//! audit's sums would balance.

use crate::tally::Outcome;
use crate::workload::Request;

/// What one requester knows about the key of its current request. A requester retries only
/// its previous request, so one key's history is all it needs.
#[derive(Debug, Clone, Copy, Default)]
pub struct KeyContract {
    /// An answer said the key's deduction committed (a success, or a replay credited below).
    committed: bool,
    /// An attempt under the key got no decision (an error): it may have committed unseen.
    undecided: bool,
}

impl KeyContract {
    /// Judges `outcome`, the answer to `request`, and returns what the tally records:
    /// - a fresh key can never replay;
    /// - once a key committed, every retry must replay: never apply again, never be refused;
    /// - a key whose attempts were all refusals cannot replay (a refusal changed nothing);
    /// - a key with an undecided attempt may replay: that is when the client learns its units
    ///   went out, so the replay counts as the key's one success.
    pub fn hold(&mut self, request: &Request, outcome: Outcome) -> Outcome {
        let broken = |kind| Outcome::Error { kind, attempts: 1 };
        if !request.retry {
            *self = Self::default();
        }
        match outcome {
            Outcome::Replayed if self.committed => Outcome::Replayed,
            Outcome::Replayed if self.undecided => {
                self.committed = true;
                Outcome::Success {
                    attempts: 1,
                    lock_wait_us: 0,
                }
            }
            Outcome::Replayed => broken("unexpected_replay"),
            Outcome::Success { .. } | Outcome::Refused if self.committed => broken("replay_not_honoured"),
            Outcome::Success { .. } => {
                self.committed = true;
                outcome
            }
            Outcome::Refused => outcome,
            Outcome::Error { .. } => {
                self.undecided = true;
                outcome
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SUCCESS: Outcome = Outcome::Success {
        attempts: 1,
        lock_wait_us: 0,
    };
    const TIMEOUT: Outcome = Outcome::Error {
        kind: "lock_timeout",
        attempts: 1,
    };

    /// The tally's records for one key: a first request, then retries, answered `answers`.
    fn held(answers: &[Outcome]) -> Vec<Outcome> {
        let mut contract = KeyContract::default();
        answers
            .iter()
            .enumerate()
            .map(|(n, answer)| {
                let request = Request {
                    sku_index: 0,
                    units: 1,
                    key: Some("k".to_owned()),
                    retry: n > 0,
                };
                contract.hold(&request, *answer)
            })
            .collect()
    }

    fn broken(kind: &'static str) -> Outcome {
        Outcome::Error { kind, attempts: 1 }
    }

    #[test]
    fn honest_answers_pass_through() {
        assert_eq!(
            held(&[SUCCESS, Outcome::Replayed, Outcome::Replayed]),
            [SUCCESS, Outcome::Replayed, Outcome::Replayed]
        );
        assert_eq!(
            held(&[Outcome::Refused, Outcome::Refused, SUCCESS]),
            [Outcome::Refused, Outcome::Refused, SUCCESS]
        );
        assert_eq!(held(&[TIMEOUT, SUCCESS]), [TIMEOUT, SUCCESS]);
    }

    #[test]
    fn a_replay_after_no_decision_is_the_keys_one_success() {
        assert_eq!(
            held(&[TIMEOUT, Outcome::Replayed, Outcome::Replayed]),
            [TIMEOUT, SUCCESS, Outcome::Replayed]
        );
        // A success, then an undecided retry, then a replay: still one success, not two.
        assert_eq!(
            held(&[SUCCESS, TIMEOUT, Outcome::Replayed]),
            [SUCCESS, TIMEOUT, Outcome::Replayed]
        );
    }

    #[test]
    fn broken_replays_are_caught() {
        assert_eq!(held(&[Outcome::Replayed]), [broken("unexpected_replay")]);
        assert_eq!(
            held(&[Outcome::Refused, Outcome::Replayed])[1],
            broken("unexpected_replay")
        );
        for answer in [SUCCESS, Outcome::Refused] {
            assert_eq!(held(&[SUCCESS, answer])[1], broken("replay_not_honoured"));
            assert_eq!(
                held(&[SUCCESS, Outcome::Replayed, answer])[2],
                broken("replay_not_honoured")
            );
            assert_eq!(
                held(&[TIMEOUT, Outcome::Replayed, answer])[2],
                broken("replay_not_honoured")
            );
        }
        // A new key starts afresh: its first answer may be anything but a replay.
        let mut contract = KeyContract::default();
        let first = Request {
            sku_index: 0,
            units: 1,
            key: Some("a".to_owned()),
            retry: false,
        };
        contract.hold(&first, SUCCESS);
        let next = Request {
            key: Some("b".to_owned()),
            ..first
        };
        assert_eq!(contract.hold(&next, SUCCESS), SUCCESS);
    }
}
