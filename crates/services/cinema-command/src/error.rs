//! The command side's errors and how each is answered.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use uuid::Uuid;
use zocalo_http::{FieldError, Problem};
use zocalo_store::StoreError;

use crate::domain::Unsellable;

pub const SEATS_TAKEN: &str = "urn:zocalo:problem:seats-taken";
pub const NOT_ENOUGH_SEATS: &str = "urn:zocalo:problem:not-enough-seats";
pub const SHOWTIME_OVERLAP: &str = "urn:zocalo:problem:showtime-overlap";
pub const PAYMENT_DECLINED: &str = "urn:zocalo:problem:payment-declined";

#[derive(Debug, thiserror::Error)]
pub enum CinemaError {
    /// Input, authentication or authorization problems, answered as they are.
    #[error("{0}")]
    Problem(Problem),
    #[error("store: {0}")]
    Store(#[from] StoreError),
    #[error("not found")]
    NotFound,
    /// Changed by someone else since it was read.
    #[error("changed concurrently")]
    Stale,
    /// Others still refer to it, or it refers to something missing.
    #[error("{0}")]
    Reference(String),
    #[error("overlaps showtime {0}")]
    Overlap(Uuid),
    #[error("seats taken: {0:?}")]
    SeatsTaken(Vec<String>),
    #[error("only {free} seats free")]
    NotEnoughSeats { free: usize, wanted: usize },
    #[error("seats not for sale")]
    Unsellable(Vec<(String, Unsellable)>),
    #[error("{0}")]
    State(String),
    #[error("payment declined")]
    Declined,
}

impl From<Problem> for CinemaError {
    fn from(problem: Problem) -> Self {
        CinemaError::Problem(problem)
    }
}

impl CinemaError {
    fn problem(self) -> Problem {
        match self {
            CinemaError::Problem(problem) => problem,
            CinemaError::Store(error) => error.into(),
            CinemaError::NotFound => Problem::not_found(),
            CinemaError::Stale => Problem::conflict(
                "it was changed by someone else meanwhile; read it again and retry",
            ),
            CinemaError::Reference(detail) | CinemaError::State(detail) => {
                Problem::conflict(detail)
            }
            CinemaError::Overlap(clash) => Problem::conflict(format!(
                "overlaps showtime {clash} in the same room (cleaning time included)"
            ))
            .with_type(SHOWTIME_OVERLAP),
            CinemaError::SeatsTaken(seats) => {
                let mut problem =
                    Problem::conflict(format!("seats already taken: {}", seats.join(", ")))
                        .with_type(SEATS_TAKEN);
                problem.errors = seats
                    .into_iter()
                    .map(|seat| FieldError {
                        field: seat,
                        message: "taken".into(),
                    })
                    .collect();
                problem
            }
            CinemaError::NotEnoughSeats { free, wanted } => {
                Problem::conflict(format!("{wanted} seats asked for, only {free} free"))
                    .with_type(NOT_ENOUGH_SEATS)
            }
            CinemaError::Unsellable(seats) => Problem::invalid_fields(
                seats
                    .into_iter()
                    .map(|(seat, why)| FieldError {
                        field: "seats".into(),
                        message: match why {
                            Unsellable::Unknown => format!("{seat} is not a seat of this room"),
                            Unsellable::Disabled => format!("{seat} is disabled"),
                        },
                    })
                    .collect(),
            ),
            CinemaError::Declined => Problem::new(StatusCode::PAYMENT_REQUIRED)
                .with_detail("the card was declined; the seats were released")
                .with_type(PAYMENT_DECLINED),
        }
    }
}

impl IntoResponse for CinemaError {
    fn into_response(self) -> Response {
        self.problem().into_response()
    }
}
