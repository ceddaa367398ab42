//! The models: text → features ([`FeatureConfig`], the public sentence encoder
//! [`SentenceEncoder`] or hashed n-grams), a multinomial logistic regression over them
//! ([`SoftmaxRegression`]), the intent classifier built on it ([`IntentModel`]), the
//! explainable need predictor ([`NeedModel`]), and their self-describing binary form.

mod encoder;
mod featurise;
mod intent;
mod io;
mod needs;
mod softmax;

pub use encoder::*;
pub use featurise::*;
pub use intent::*;
pub use io::*;
pub use needs::*;
pub use softmax::*;
