//! (simulator: to come)
