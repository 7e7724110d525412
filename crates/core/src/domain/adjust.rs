//! Stock adjustments by hand: returns, damage, recounts, restocks outside the restock
//! endpoint. Each writes one ledger row with reason `adjust`, its kind and the client's
//! reference.

use serde::Serialize;

use super::{AdjustmentKind, IDEMPOTENCY_KEY_MAX_LEN, IdempotencyKey, QUANTITY_MAX, SkuId};
use crate::error::InvalidInput;

/// A validated adjustment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdjustRequest {
    /// The SKU.
    pub sku: SkuId,
    /// Units added (positive) or removed (negative); never 0, at most [`QUANTITY_MAX`] either way.
    pub delta: i64,
    /// Why.
    pub kind: AdjustmentKind,
    /// The client's reference (an RMA number, a count sheet), stored on the ledger row.
    pub reference: Option<String>,
    /// When set, a repeat of this request returns the first receipt and changes nothing.
    pub idempotency_key: Option<IdempotencyKey>,
}

impl AdjustRequest {
    /// Validates an adjustment: a non-zero delta within [`QUANTITY_MAX`], whose sign fits the
    /// kind (a return or a restock adds, damage removes, a recount does either), and a
    /// reference of 1..=128 printable ASCII characters when given.
    pub fn new(
        sku: SkuId,
        delta: i64,
        kind: AdjustmentKind,
        reference: Option<String>,
    ) -> Result<Self, InvalidInput> {
        if delta == 0 || delta.unsigned_abs() > u64::from(QUANTITY_MAX) {
            return Err(InvalidInput::AdjustmentOutOfRange {
                given: delta,
                max: QUANTITY_MAX,
            });
        }
        let sign_fits = match kind {
            AdjustmentKind::Return | AdjustmentKind::Restock => delta > 0,
            AdjustmentKind::Damage => delta < 0,
            AdjustmentKind::Recount => true,
        };
        if !sign_fits {
            return Err(InvalidInput::AdjustmentSign { kind: kind.as_str() });
        }
        if let Some(reference) = &reference
            && (reference.is_empty()
                || reference.len() > IDEMPOTENCY_KEY_MAX_LEN
                || reference.chars().any(|c| !c.is_ascii_graphic()))
        {
            return Err(InvalidInput::Reference {
                max_len: IDEMPOTENCY_KEY_MAX_LEN,
            });
        }
        Ok(Self {
            sku,
            delta,
            kind,
            reference,
            idempotency_key: None,
        })
    }

    /// Sets the idempotency key.
    pub fn with_idempotency_key(mut self, key: IdempotencyKey) -> Self {
        self.idempotency_key = Some(key);
        self
    }
}

/// Proof of a committed adjustment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AdjustReceipt {
    /// The SKU.
    pub sku: SkuId,
    /// Units added or removed.
    pub delta: i64,
    /// The SKU's stock right after it.
    pub stock_after: i64,
    /// Its ledger row.
    pub ledger_id: i64,
    /// Why.
    pub kind: AdjustmentKind,
    /// The client's reference.
    pub reference: Option<String>,
    /// True when this answer replays an adjustment committed before under the same key.
    pub replayed: bool,
    /// The key the ledger row carries (the client's, or a generated one).
    pub idempotency_key: IdempotencyKey,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn adjust(delta: i64, kind: AdjustmentKind) -> Result<AdjustRequest, InvalidInput> {
        AdjustRequest::new(SkuId::parse("a").unwrap(), delta, kind, None)
    }

    #[test]
    fn the_sign_fits_the_kind_and_limits_are_explicit() {
        assert!(adjust(2, AdjustmentKind::Return).is_ok());
        assert!(adjust(-2, AdjustmentKind::Damage).is_ok());
        assert!(adjust(-2, AdjustmentKind::Recount).is_ok() && adjust(2, AdjustmentKind::Recount).is_ok());
        assert!(matches!(
            adjust(-1, AdjustmentKind::Return),
            Err(InvalidInput::AdjustmentSign { .. })
        ));
        assert!(matches!(
            adjust(1, AdjustmentKind::Damage),
            Err(InvalidInput::AdjustmentSign { .. })
        ));
        assert!(matches!(
            adjust(0, AdjustmentKind::Recount),
            Err(InvalidInput::AdjustmentOutOfRange { .. })
        ));
        let too_big = i64::from(QUANTITY_MAX) + 1;
        assert!(matches!(
            adjust(-too_big, AdjustmentKind::Recount),
            Err(InvalidInput::AdjustmentOutOfRange { .. })
        ));
        let bad_reference = AdjustRequest::new(
            SkuId::parse("a").unwrap(),
            1,
            AdjustmentKind::Return,
            Some("a b".into()),
        );
        assert!(matches!(bad_reference, Err(InvalidInput::Reference { .. })));
    }
}
