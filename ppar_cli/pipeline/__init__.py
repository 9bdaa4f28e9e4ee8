"""The product path of `ppar anonymize`: options, job planning, the frame stream (decode -> clips -> model ->
kept tubelets -> fill -> encode), the face guard, the preview and the score map. It never imports ppar_cli.research."""
