"""Model kernels: for one CSR batch, margins, loss derivatives and lazy coordinate updates."""
