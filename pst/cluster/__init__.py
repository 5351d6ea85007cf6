"""scikit-learn-style clustering on pst's compiled ops (filled in below as the estimators land)."""
