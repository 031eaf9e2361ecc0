"""Words that make the demo look like an Argentine pharmacy chain (accents on purpose)."""

from __future__ import annotations

FIRST_NAMES = (
    "María", "José", "Juan", "Ana", "Lucía", "Martín", "Sofía", "Nicolás", "Valentina",
    "Matías", "Agustín", "Camila", "Joaquín", "Florencia", "Tomás", "Micaela", "Héctor",
    "Mónica", "Raúl", "Inés", "Germán", "Belén", "Ramón", "Verónica", "Graciela", "Jorge",
)
LAST_NAMES = (
    "González", "Rodríguez", "Gómez", "Fernández", "López", "Díaz", "Martínez", "Pérez",
    "García", "Sánchez", "Romero", "Sosa", "Álvarez", "Torres", "Ruiz", "Ramírez", "Flores",
    "Benítez", "Acosta", "Medina", "Herrera", "Suárez", "Aguirre", "Giménez", "Gutiérrez",
    "Pereyra", "Núñez", "Peña", "Muñoz", "Castro", "Ibáñez", "Ordóñez",
)
# ASCII spellings for e-mail addresses and user names.
USER_NAMES = (
    "maria", "jose", "juan", "ana", "lucia", "martin", "sofia", "nicolas", "valen", "matias",
    "agus", "cami", "joaquin", "flor", "tomas", "mica", "hector", "monica", "raul", "ines",
)
MAIL_DOMAINS = ("gmail.com", "hotmail.com", "yahoo.com.ar", "outlook.com", "fibertel.com.ar")
STREETS = (
    "Av. Rivadavia", "Av. Corrientes", "San Martín", "Belgrano", "Sarmiento", "Mitre",
    "9 de Julio", "Av. Colón", "Güemes", "25 de Mayo", "Moreno", "Av. Santa Fe", "Entre Ríos",
    "Tucumán", "Lavalle", "Independencia", "Bv. Illia", "Av. Vélez Sarsfield", "Chacabuco",
)
# (city, AFIP province letter, postal code, area code)
CITIES = (
    ("Córdoba", "X", "5000", "0351"), ("San Miguel de Tucumán", "T", "4000", "0381"),
    ("Rosario", "S", "2000", "0341"), ("Mendoza", "M", "5500", "0261"),
    ("La Plata", "B", "1900", "0221"), ("Mar del Plata", "B", "7600", "0223"),
    ("Salta", "A", "4400", "0387"), ("Neuquén", "Q", "8300", "0299"),
    ("Paraná", "E", "3100", "0343"), ("Santa Fe", "S", "3000", "0342"),
    ("Bahía Blanca", "B", "8000", "0291"), ("Río Cuarto", "X", "5800", "0358"),
    ("San Salvador de Jujuy", "Y", "4600", "0388"), ("Posadas", "N", "3300", "0376"),
    ("Villa María", "X", "5900", "0353"), ("Yerba Buena", "T", "4107", "0381"),
    ("Ciudad Autónoma de Buenos Aires", "C", "1000", "011"),
)
PROVINCES = (
    "Córdoba", "Tucumán", "Santa Fe", "Mendoza", "Buenos Aires", "Salta", "Neuquén",
    "Entre Ríos", "Jujuy", "Misiones", "Río Negro", "Ciudad Autónoma de Buenos Aires",
)
BRANCHES = (
    "Centro", "Nueva Córdoba", "Güemes", "Alberdi", "Cerro de las Rosas", "Yerba Buena",
    "Barrio Norte", "Villa Cabrera", "General Paz", "Argüello", "Jardín", "San Vicente",
    "Alta Córdoba", "Villa Belgrano", "Peña", "Plaza España", "Patio Olmos", "Tribunales",
    "Muñiz", "Terminal", "Aeropuerto", "Bv. San Juan",
)
LABS = (
    "Laboratorios Bagó", "Roemmers", "Elea", "Gador", "Baliarda", "Casasco", "Raffo",
    "Bernabó", "Montpellier", "Sidus", "Phoenix", "Richmond", "Andrómaco", "Craveri",
    "Investi", "Temis Lostaló", "Laboratorio Pasteur", "Química Montpellier", "Beta",
)
SUPPLIERS = (
    "Droguería del Sud S.A.", "Monroe Americana S.A.", "Droguería Suizo Argentina S.A.",
    "Disprofarma S.A.", "Droguería Kellerhoff S.A.", "Droguería Meta S.R.L.",
    "Asoprofarma Coop. Ltda.", "Droguería Córdoba Norte S.R.L.", "Distribuidora Peña Hnos.",
    "Farmacéutica del Noroeste S.A.",
)
HEALTH_INSURERS = (
    "PAMI", "OSDE", "IOMA", "Swiss Medical", "Galeno", "OSECAC", "APROSS", "Medifé",
    "OSPRERA", "Subsidio de Salud", "Sancor Salud", "Federada Salud", "OSDEPYM",
    "Unión Personal", "OSPE", "Jerárquicos Salud",
)
PLANS = ("Plan 210", "Plan 310", "Plan 410", "Básico", "Jubilados", "Materno infantil",
         "Crónicos", "Oncológico", "Genéricos 40%", "Integral")
DRUGS = (
    ("Ibuprofeno", ("200 mg", "400 mg", "600 mg"), "comp."),
    ("Amoxicilina", ("500 mg", "875 mg"), "comp."),
    ("Amoxicilina + Ác. Clavulánico", ("875/125 mg",), "comp."),
    ("Paracetamol", ("500 mg", "1 g"), "comp."),
    ("Omeprazol", ("20 mg", "40 mg"), "cáps."),
    ("Enalapril", ("5 mg", "10 mg", "20 mg"), "comp."),
    ("Losartán", ("50 mg", "100 mg"), "comp."),
    ("Atorvastatina", ("10 mg", "20 mg", "40 mg"), "comp."),
    ("Metformina", ("500 mg", "850 mg", "1000 mg"), "comp."),
    ("Levotiroxina", ("25 mcg", "50 mcg", "100 mcg"), "comp."),
    ("Clonazepam", ("0,5 mg", "2 mg"), "comp."),
    ("Diclofenac", ("50 mg", "75 mg"), "comp."),
    ("Loratadina", ("10 mg",), "comp."),
    ("Ácido Acetilsalicílico", ("100 mg", "500 mg"), "comp."),
    ("Amlodipina", ("5 mg", "10 mg"), "comp."),
    ("Salbutamol", ("100 mcg",), "aerosol"),
    ("Cefalexina", ("500 mg",), "cáps."),
    ("Ranitidina", ("150 mg",), "comp."),
    ("Sertralina", ("50 mg",), "comp."),
    ("Budesonide", ("200 mcg",), "inhalador"),
)
PACK_SIZES = ("x 10", "x 14", "x 20", "x 30", "x 60")
OTHER_PRODUCTS = (
    "Shampoo Sedal 340 ml", "Protector solar Dermaglós FPS 50 200 ml", "Crema Nivea 200 ml",
    "Pañales Pampers Confort Sec G x 36", "Alcohol en gel 250 ml", "Jarabe Bisolvon 120 ml",
    "Algodón Estrella 140 g", "Termómetro digital", "Preservativos Prime x 3",
    "Leche Nutrilon 3 800 g", "Cepillo dental Colgate", "Desodorante Rexona 150 ml",
    "Gasas estériles x 10", "Apósitos Curitas x 20", "Vitamina C 1 g efervescente x 10",
)


def product_names() -> tuple[str, ...]:
    """Every drug x strength x pack combination ('Ibuprofeno 400 mg x 20 comp.') plus toiletries."""
    names = [
        f"{drug} {strength} {pack} {form}"
        for drug, strengths, form in DRUGS
        for strength in strengths
        for pack in PACK_SIZES
    ]
    return (*names, *OTHER_PRODUCTS)


PRODUCTS = product_names()
PHRASES = (
    "Entrega a domicilio", "Cliente habitual", "Reposición urgente", "Revisar stock",
    "Vencimiento próximo", "Promoción 2x1", "Atención preferencial", "Receta electrónica",
    "Pago con débito", "Cobertura al 40%", "Faltante en droguería", "Devolución por rotura",
    "Pedido telefónico", "Retira en sucursal Peña", "Autorizado por el farmacéutico",
)
# Multi-line notes with tabs and backslashes: they exercise LOAD DATA escaping and later
# extraction of text that contains structural characters.
NOTES = (
    "Llamar antes de entregar.\nTimbre 2° B",
    "Observación:\tpaciente crónico",
    "Ruta de archivo C:\\Plex\\recetas\\",
    "Dosis: 1 comp. cada 8 h\nNo mezclar con alcohol",
    "Cliente pidió factura A\tCUIT en trámite",
)
CATEGORIES = (
    "Analgésicos", "Antibióticos", "Antihipertensivos", "Dermocosmética", "Cuidado del bebé",
    "Higiene personal", "Vitaminas y suplementos", "Ortopedia", "Perfumería", "Antigripales",
    "Gastrointestinal", "Oftalmología", "Psicofármacos", "Diabetes", "Accesorios",
)
ACCOUNTS = (
    "Caja", "Banco Nación cta. cte.", "Deudores por ventas", "Mercaderías",
    "IVA débito fiscal", "IVA crédito fiscal", "Proveedores", "Ventas",
    "Costo de mercadería vendida", "Obras sociales a cobrar", "Tarjetas a acreditar",
    "Percepciones IIBB", "Sueldos a pagar", "Gastos bancarios",
)
