//! Rendering that is not plain text: the funnel chart.

pub mod chart;
