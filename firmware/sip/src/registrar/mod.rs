//! The registrar for local SIP phones (under construction).

pub(crate) mod headers;
