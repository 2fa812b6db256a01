//! How a decision's name is written: in the admin API's JSON, the CLI's `--json`, the state
//! file and the audit log. One table per enum gives its text, its parser and its serde form,
//! so the three cannot disagree, and a misspelt name is a compile error, not a new case.

/// A name that is none of an enum's, so that reading an unknown verdict, gate or rule fails
/// with what was read and what was expected instead of turning into a new case.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown {kind} '{name}': expected one of {expected}")]
pub struct UnknownName {
    /// What was being read (`verdict`, `gate`, `rule`).
    pub kind: &'static str,
    /// The text that matched no name.
    pub name: String,
    /// Every name it could have been, comma-separated.
    pub expected: String,
}

/// Gives a field-less enum its names: `ALL`, `as_str`, `FromStr`, `Display` (which honours
/// width and alignment, for tables) and serde as the plain string.
macro_rules! wire_names {
    ($kind:literal, $ty:ident { $($variant:ident => $text:literal),+ $(,)? }) => {
        impl $ty {
            /// Every value, in declaration order.
            pub const ALL: &'static [$ty] = &[$($ty::$variant),+];

            /// The name as the admin API, the CLI and the state file write it.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($ty::$variant => $text),+
                }
            }
        }

        impl ::std::str::FromStr for $ty {
            type Err = $crate::gates::UnknownName;

            fn from_str(text: &str) -> Result<Self, Self::Err> {
                match text {
                    $($text => Ok($ty::$variant),)+
                    _ => Err($crate::gates::UnknownName {
                        kind: $kind,
                        name: text.to_string(),
                        expected: [$($text),+].join(", "),
                    }),
                }
            }
        }

        impl ::std::fmt::Display for $ty {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                f.pad(self.as_str())
            }
        }

        impl ::serde::Serialize for $ty {
            fn serialize<S: ::serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        impl<'de> ::serde::Deserialize<'de> for $ty {
            fn deserialize<D: ::serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let text = String::deserialize(d)?;
                text.parse().map_err(::serde::de::Error::custom)
            }
        }
    };
}

pub(crate) use wire_names;
