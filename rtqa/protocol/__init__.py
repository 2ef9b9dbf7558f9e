"""The protocol language: loading and validating YAML protocols, limits and grades, structure-name
matching, and the clinical facts a protocol may depend on."""
