"""Backend: column allocation, scheduling and emission of CRAM assembly."""
