"""The commands a user runs besides `dvc repro`, one module each, named after its command:
`reprotune-check` (check.py), `-predict`, `-serve`, `-search`, `-seeds`, `-sweep`. No stage
imports them, so no stage depends on them."""
