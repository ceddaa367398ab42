//! How a service's error reaches a gRPC client: each error type says its own code beside its
//! definition ([`ServiceError`]), and [`status`] turns it into the answer — the error's own
//! message for what the caller can act on, and for an internal failure a generic message while
//! the cause goes to the service's log (never to the caller).

use tonic::{Code, Status};

/// An error a service answers with.
pub trait ServiceError: std::fmt::Display {
    /// The code a client program can branch on; [`Code::Internal`] for the service's own
    /// failures, whose text is logged and not sent.
    fn code(&self) -> Code;

    /// The message the caller reads (the error's text unless the type says better).
    fn message(&self) -> String {
        self.to_string()
    }
}

/// The answer for `e`. An internal failure is logged here, under `service`'s name.
pub fn status<E: ServiceError>(service: &str, e: E) -> Status {
    match e.code() {
        Code::Internal | Code::Unknown => {
            tracing::error!(error = %e, service, "request failed inside the service");
            Status::internal(format!(
                "the {service} failed to complete the request; its operator can see why in \
                 the {service}'s log"
            ))
        }
        code => Status::new(code, e.message()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    enum E {
        Missing,
        Disk(&'static str),
        Gone,
    }

    impl std::fmt::Display for E {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            match self {
                E::Missing => write!(f, "no such thing"),
                E::Disk(path) => write!(f, "cannot write {path}"),
                E::Gone => write!(f, "entry 3 was removed"),
            }
        }
    }

    impl ServiceError for E {
        fn code(&self) -> Code {
            match self {
                E::Missing => Code::NotFound,
                E::Disk(_) => Code::Internal,
                E::Gone => Code::FailedPrecondition,
            }
        }
        fn message(&self) -> String {
            match self {
                E::Gone => format!("{self}; fetch from the first kept entry"),
                _ => self.to_string(),
            }
        }
    }

    #[test]
    fn a_callers_error_says_what_happened_and_an_internal_one_says_nothing_of_the_inside() {
        let s = status("node", E::Missing);
        assert_eq!((s.code(), s.message()), (Code::NotFound, "no such thing"));
        let s = status("node", E::Gone);
        assert_eq!(s.code(), Code::FailedPrecondition);
        assert_eq!(
            s.message(),
            "entry 3 was removed; fetch from the first kept entry"
        );
        let s = status("coordinator", E::Disk("/srv/secret/path"));
        assert_eq!(s.code(), Code::Internal);
        assert!(!s.message().contains("/srv/secret"), "{}", s.message());
        assert!(s.message().contains("coordinator's log"), "{}", s.message());
    }
}
