//! Pretrained networks (candle) arrive with the models issue.
