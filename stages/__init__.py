"""Curation stages. Stages are plain classes and never import Ray (see ``stages.base``)."""
