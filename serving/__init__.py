"""Online candidate generation: Feast online features -> consumer tower -> FAISS."""
