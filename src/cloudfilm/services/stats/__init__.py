"""The health commission's dashboard (issue 17): daily rollups of the live tables, the
figures for each viewer's scope (province, a health bureau's area, a hospital), alerts."""
