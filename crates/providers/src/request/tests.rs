//! Table tests of request inspection.
