"""The scenarios, one module each (`SCENARIO = Scenario(...)`), listed in file-name order."""
