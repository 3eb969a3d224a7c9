"""The Babylon tables as the app has them: schema, migrations, reader and recorder."""
