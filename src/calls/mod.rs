//! From AMI events to the calls people made: the model and the correlator.

pub mod model;
pub mod tracker;

pub use model::{Call, Direction, LinkedId, Micros, Status};
pub use tracker::{skimmable, tracker_codec, LiveState, Moment, Output, Tracker};
