"""SNMP traps: the sender process (esc.snmp.sender) and the notifications' OIDs (esc.snmp.mib)."""
