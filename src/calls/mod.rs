//! From AMI events to the calls people made: the model and the correlator.

pub mod model;
pub mod tracker;

pub use model::{Call, Direction, Gap, LinkedId, Micros, Status, Transfer, TransferKind};
pub use tracker::{skimmable, tracker_codec, LiveState, LiveStateError, Moment, Output, Tracker};
