"""Support code for the tests (browsers, served apps, reference models, prompts); no tests here."""
