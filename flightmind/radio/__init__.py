"""Radio phraseology shared by the synthetic cockpit commands (flightmind.data.commands) and the demo
corpus (flightmind.demo): how numbers are spoken (phraseology.py) and who is on the frequency —
airports and call signs (traffic.py, tables in tables/)."""
