"""The DICOM node of a trial QA office: ``rtqa listen`` receives plans from planning systems,
pseudonymises, checks and records them.

An application beside the CLI: it calls discovery, evaluation, the report renderers and the
ledger, and nothing below it imports it. pynetdicom is imported here only (the ``node`` extra).

Modules
-------
allow       the allow-list: calling AE titles (and addresses) to institutions
pseudonym   keyed pseudonyms (HMAC) of PatientID, and the node's own map back to the patient
spool       the spool on disk: per-association staging, institution/patient/study, never overwriting
checker     settle, discover, check with the code of ``rtqa check``, write reports, record in the ledger
server      the Storage SCP (pynetdicom): associations, C-STORE, C-ECHO, TLS, orderly stop
"""
