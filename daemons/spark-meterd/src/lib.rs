pub mod config;
pub mod link;
pub mod radio;
pub mod sim;
