"""Research code: benchmark readers, the synthetic benchmark, training and the evaluation protocols.
It uses the product path; the product path never uses it."""
