//! How a player's state is laid out as a buffered record in the key-value store: one text field
//! per value the client sets (`p` the position, `r`, `h`, `a` the attributes in hex), and the
//! store's own `v` version and `t` time.
//!
//! The position is one field, not three, because Redis pays per field and per argument on the
//! hot path; and it is the three coordinates' IEEE-754 bits, eight hex digits each (24 in all),
//! because formatting three floats as decimals was the largest single cost of an update in the
//! gateway (BENCHMARKS.md, "Fifth round"). Records written by an earlier layout carry `x`, `y` and
//! `z` as decimals instead; they are still read, and a `p` written since wins over them. An
//! earlier gateway does not read `p`, which is why gateways sharing a Redis run one release
//! (README, "Where data lives").
//!
//! Other floats are written with Rust's shortest round-trip formatting; either way a value read
//! back is the exact `f32` that was written.

use kv::{Field, PackedFields};
use uuid::Uuid;

use crate::{PlayerError, PlayerState, Position, StateUpdate};

/// The fields an update sets; absent values are left out, so the store keeps the old ones. The
/// plain form of [`packed_update_fields`], for seeding and tests.
pub(crate) fn update_fields(update: &StateUpdate) -> Vec<Field> {
    packed_update_fields(update).iter().map(|(name, value)| (name.to_owned(), value.to_owned())).collect()
}

/// The fields an update sets, packed as the store takes them: formatted straight into one buffer,
/// one allocation for the whole update.
pub(crate) fn packed_update_fields(update: &StateUpdate) -> PackedFields {
    let attributes_len = update.attributes.as_ref().map_or(0, |attributes| 2 * attributes.len());
    // The usual names and values besides the attributes: `p` and its 24 digits, a rotation and a
    // health of a few digits each. Longer ones only make the buffer grow.
    let mut fields = PackedFields::with_capacity(48 + attributes_len);
    if let Some(position) = update.position {
        // Hex digits are always UTF-8.
        fields.push_str("p", std::str::from_utf8(&position_hex(position)).unwrap_or_default());
    }
    if let Some(rotation) = update.rotation {
        fields.push("r", format_args!("{rotation}"));
    }
    if let Some(health) = update.health {
        fields.push("h", format_args!("{health}"));
    }
    if let Some(attributes) = &update.attributes {
        fields.push("a", format_args!("{}", Hex(attributes)));
    }
    fields
}

/// A position as its coordinates' bits, eight lowercase hex digits each. Written by hand: through
/// `fmt` it cost five times as many instructions.
fn position_hex(position: Position) -> [u8; POSITION_HEX_LEN] {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut hex = [0; POSITION_HEX_LEN];
    let bits = [position.x.to_bits(), position.y.to_bits(), position.z.to_bits()];
    for (digits, bits) in hex.chunks_exact_mut(8).zip(bits) {
        for (index, digit) in digits.iter_mut().enumerate() {
            *digit = DIGITS[(bits >> (28 - 4 * index)) as usize & 0xf];
        }
    }
    hex
}

const POSITION_HEX_LEN: usize = 24;

fn parse_position_hex(value: &str) -> Option<Position> {
    if value.len() != POSITION_HEX_LEN || !value.bytes().all(|byte| byte.is_ascii_hexdigit()) {
        return None;
    }
    let coordinate = |at: usize| u32::from_str_radix(&value[at..at + 8], 16).ok().map(f32::from_bits);
    Some(Position { x: coordinate(0)?, y: coordinate(8)?, z: coordinate(16)? })
}

/// Bytes written as lowercase hex, two digits each.
struct Hex<'a>(&'a [u8]);

impl std::fmt::Display for Hex<'_> {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.iter().try_for_each(|byte| write!(formatter, "{byte:02x}"))
    }
}

/// Every field of a state, including its version and time: what seeding writes.
pub(crate) fn all_fields(state: &PlayerState) -> Vec<Field> {
    let mut fields = update_fields(&StateUpdate {
        position: Some(state.position),
        rotation: Some(state.rotation),
        health: Some(state.health),
        attributes: Some(state.attributes.clone()),
    });
    fields.push(("v".to_owned(), state.version.to_string()));
    fields.push(("t".to_owned(), state.updated_at_ms.to_string()));
    fields
}

/// Reads a record back; absent fields take their defaults.
pub(crate) fn parse(player_id: Uuid, fields: &[Field]) -> Result<PlayerState, PlayerError> {
    fn number<T: std::str::FromStr>(name: &str, value: &str) -> Result<T, PlayerError> {
        value
            .parse()
            .map_err(|_| PlayerError::Internal(format!("buffered field {name}={value:?} is not a number")))
    }
    let mut state = PlayerState { player_id, ..PlayerState::default() };
    let mut position = Position::default();
    let mut packed_position = None;
    for (name, value) in fields {
        match name.as_str() {
            "p" => {
                packed_position = Some(parse_position_hex(value).ok_or_else(|| {
                    PlayerError::Internal(format!("buffered position {value:?} is not 24 hex digits"))
                })?);
            }
            "x" => position.x = number(name, value)?,
            "y" => position.y = number(name, value)?,
            "z" => position.z = number(name, value)?,
            "r" => state.rotation = number(name, value)?,
            "h" => state.health = number(name, value)?,
            "a" => {
                state.attributes = hex::decode(value).map_err(|_| {
                    PlayerError::Internal(format!("buffered attributes {value:?} are not hex"))
                })?;
            }
            "v" => state.version = number(name, value)?,
            "t" => state.updated_at_ms = number(name, value)?,
            _ => {}
        }
    }
    state.position = packed_position.unwrap_or(position);
    Ok(state)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_state_survives_the_round_trip_through_fields_exactly() {
        let state = PlayerState {
            player_id: Uuid::from_u128(1),
            position: Position { x: 0.1, y: -123_456.79, z: f32::MIN_POSITIVE },
            rotation: 359.99,
            health: 1_000_000,
            attributes: vec![0, 255, 16],
            version: 42,
            updated_at_ms: 1_700_000_000_123,
        };
        assert_eq!(parse(state.player_id, &all_fields(&state)).expect("parse"), state);
    }

    #[test]
    fn packed_update_fields_match_the_plain_ones() {
        let updates = [
            StateUpdate { health: Some(5), ..StateUpdate::default() },
            StateUpdate {
                position: Some(Position { x: 0.1, y: -123_456.79, z: f32::MIN_POSITIVE }),
                rotation: Some(-179.5),
                health: Some(1_000_000),
                attributes: Some(vec![0, 255, 16]),
            },
            StateUpdate { attributes: Some(Vec::new()), ..StateUpdate::default() },
        ];
        for update in updates {
            let packed = packed_update_fields(&update);
            let pairs: Vec<Field> =
                packed.iter().map(|(name, value)| (name.to_owned(), value.to_owned())).collect();
            assert_eq!(pairs, update_fields(&update), "{update:?}");
        }
        let full = StateUpdate {
            position: Some(Position { x: 1.0, y: 2.0, z: -3.0 }),
            rotation: Some(-179.5),
            health: Some(1_000_000),
            attributes: Some(vec![0, 255, 16]),
        };
        let packed = packed_update_fields(&full);
        assert_eq!(
            packed.iter().collect::<Vec<_>>(),
            [("p", "3f80000040000000c0400000"), ("r", "-179.5"), ("h", "1000000"), ("a", "00ff10")]
        );
    }

    #[test]
    fn a_position_of_the_earlier_three_field_layout_is_read_and_a_newer_packed_one_wins() {
        let field = |name: &str, value: &str| (name.to_owned(), value.to_owned());
        let earlier = [field("x", "1.5"), field("y", "-2"), field("z", "3"), field("v", "7")];
        let state = parse(Uuid::from_u128(1), &earlier).expect("parse");
        assert_eq!((state.position, state.version), (Position { x: 1.5, y: -2.0, z: 3.0 }, 7));

        let updated_since = [
            field("p", "4080000040a80000c0c00000"),
            earlier[0].clone(),
            earlier[1].clone(),
            earlier[2].clone(),
        ];
        let state = parse(Uuid::from_u128(1), &updated_since).expect("parse");
        assert_eq!(state.position, Position { x: 4.0, y: 5.25, z: -6.0 });
    }

    #[test]
    fn the_position_is_written_as_each_coordinates_bits_in_hex() {
        for position in [
            Position { x: 1.0, y: 2.0, z: -3.0 },
            Position { x: 0.1, y: -123_456.79, z: f32::MIN_POSITIVE },
            Position { x: -0.0, y: f32::MAX, z: 1e-45 },
        ] {
            let expected = format!(
                "{:08x}{:08x}{:08x}",
                position.x.to_bits(),
                position.y.to_bits(),
                position.z.to_bits()
            );
            assert_eq!(position_hex(position).as_slice(), expected.as_bytes());
            let parsed = parse_position_hex(&expected).expect("parse");
            assert_eq!(
                [parsed.x.to_bits(), parsed.y.to_bits(), parsed.z.to_bits()],
                [position.x.to_bits(), position.y.to_bits(), position.z.to_bits()]
            );
        }
    }

    #[test]
    fn a_malformed_packed_position_is_an_error_not_a_default() {
        let valid = "3f80000040000000c0400000";
        assert_eq!(parse_position_hex(valid), Some(Position { x: 1.0, y: 2.0, z: -3.0 }));
        for value in [
            "1,2,3",
            &valid[..23],
            &format!("{valid}0"),
            "3f80000040000000c040000g",
            "+f80000040000000c0400000",
        ] {
            let fields = [("p".to_owned(), value.to_owned())];
            assert!(parse(Uuid::from_u128(1), &fields).is_err(), "{value:?}");
        }
    }

    #[test]
    fn an_update_names_only_what_it_changes() {
        let fields = update_fields(&StateUpdate { health: Some(5), ..StateUpdate::default() });
        assert_eq!(fields, vec![("h".to_owned(), "5".to_owned())]);
    }
}
