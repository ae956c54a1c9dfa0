"""Building blocks of the networks in vseg_core.models; import from the submodules."""
