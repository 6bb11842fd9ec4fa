//! The `state` scenario: authenticate once, then send `UpdateState` requests until the end, closed
//! loop or paced (see [`super::request_loop`]), as a moving player would: every update moves the
//! player a step along a circle of its own, every [`ROTATION_EVERY`]th also turns it and every
//! [`HEALTH_EVERY`]th also changes its health. The PostgreSQL baseline replays the same
//! [`Walk`], so both sides write the same updates.

use std::f32::consts::TAU;

use proto::{Position, Request, StateUpdate};

use super::{ClientContext, request_loop};

/// Radius of each player's circle, in world units.
pub const RADIUS: f32 = 50.0;
/// Updates per lap of the circle.
pub const STEPS_PER_LAP: u64 = 360;
/// Every this many updates also carries a rotation (the heading of the walk).
pub const ROTATION_EVERY: u64 = 10;
/// Every this many updates also carries a health value.
pub const HEALTH_EVERY: u64 = 50;
/// Players' circles are centred on a grid this many circles wide, this far apart.
const GRID_WIDTH: usize = 100;
/// Distance between neighbouring circles' centres, in world units.
const GRID_SPACING: f32 = 4.0 * RADIUS;
/// Amplitude of the walk's rise and fall, in world units.
const BOB_HEIGHT: f32 = 2.0;
/// Health a player starts at and returns to.
const FULL_HEALTH: u32 = 100;

/// Runs one state client.
pub async fn run(ctx: ClientContext) {
    let mut walk = Walk::new(ctx.index);
    request_loop::run(ctx, move || Request::UpdateState(walk.next_update())).await;
}

/// Player `n`'s walk: one step along its circle per update.
#[derive(Debug, Clone)]
pub struct Walk {
    centre: (f32, f32),
    step: u64,
}

impl Walk {
    /// The walk of player `n`, whose circle is centred on its own grid cell.
    pub fn new(n: usize) -> Walk {
        // Grid cells are small whole numbers, exact as f32.
        let cell = |i: usize| (i % GRID_WIDTH) as f32 * GRID_SPACING;
        Walk { centre: (cell(n), cell(n / GRID_WIDTH)), step: 0 }
    }

    /// The next update: always a new position; sometimes a rotation or a health value too.
    pub fn next_update(&mut self) -> StateUpdate {
        self.step += 1;
        let step = self.step;
        let angle = (step % STEPS_PER_LAP) as f32 / STEPS_PER_LAP as f32 * TAU;
        let position = Position {
            x: self.centre.0 + RADIUS * angle.cos(),
            y: BOB_HEIGHT * (3.0 * angle).sin(),
            z: self.centre.1 + RADIUS * angle.sin(),
        };
        // Walking counter-clockwise, the heading is the tangent: a quarter turn ahead of the
        // radius, kept within (-180, 180] degrees.
        let heading = (angle.to_degrees() + 90.0 + 180.0).rem_euclid(360.0) - 180.0;
        StateUpdate {
            position: Some(position),
            rotation: step.is_multiple_of(ROTATION_EVERY).then_some(heading),
            // Loses one point per health update, and is healed back to full after 50 of them.
            health: step
                .is_multiple_of(HEALTH_EVERY)
                .then(|| FULL_HEALTH - u32::try_from((step / HEALTH_EVERY) % 50).unwrap_or(0)),
            attributes: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use proto::limits;

    use super::*;

    #[test]
    fn walks_move_every_update_and_stay_within_the_protocol_limits() {
        for n in [0, 1, 99, 100, 9_999, 1_000_000] {
            let mut walk = Walk::new(n);
            let mut last = None;
            let (mut rotations, mut healths) = (0, 0);
            for _ in 0..2 * STEPS_PER_LAP {
                let update = walk.next_update();
                let position = update.position.expect("every update moves");
                assert_ne!(Some(position), last, "player {n} stood still");
                last = Some(position);
                for coordinate in [position.x, position.y, position.z] {
                    assert!(coordinate.is_finite() && coordinate.abs() <= limits::COORDINATE_MAX_ABS);
                }
                if let Some(rotation) = update.rotation {
                    rotations += 1;
                    assert!(rotation.abs() <= limits::ROTATION_MAX_ABS_DEGREES, "{rotation}");
                }
                if let Some(health) = update.health {
                    healths += 1;
                    assert!((1..=FULL_HEALTH).contains(&health), "{health}");
                }
            }
            assert_eq!(rotations, 2 * STEPS_PER_LAP / ROTATION_EVERY);
            assert_eq!(healths, 2 * STEPS_PER_LAP / HEALTH_EVERY);
        }
    }
}
