//! The log channel: placeholder until the channel lands.
