"""tumorbench: reproduce Ahamed & Sadia (2022) as a DVC pipeline."""
